"""What a training run needs before its first step: data, models, judges, the executor.

Hub ids and local directories are loaded as they are. The name ``tiny`` builds the offline
default instead: a byte-BPE tokenizer and a small Llama-style student trained from scratch on the
synthetic problems, and a tiny "teacher" judge taught to answer Yes/No on correct and mistaken
programs. Both are cached under ``cache_dir`` (written atomically), so only the first run pays.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from rlkd_fast import atomic, prompts
from rlkd_fast.config import TrainConfig
from rlkd_fast.data import Problem, load_split
from rlkd_fast.policy import PolicyWithValue
from rlkd_fast.prompts import judge_prompt, pot_prompt, program_body
from rlkd_fast.prompts import program_header as header_of

TINY_VERSION = 1  # bump when the tiny builders change, so stale caches are not reused


@dataclass
class RunData:
    labeled: list[Problem]  # question, answer and program (SFT and the verifiable reward)
    unlabeled: list[Problem]  # questions only are used
    test: list[Problem]  # held-out, with answers


class DataError(ValueError):
    """A data set the run needs is missing, unreadable or has no usable rows (the message names
    the setting and the file)."""


def _describe(cfg: TrainConfig, key: str) -> str:
    """``eval_dataset=gsm8k (eval_source=x.jsonl, eval_split=test)``: where a split came from."""
    prefix = "eval" if key == "eval_dataset" else key
    source = getattr(cfg, f"{prefix}_source")
    where = f"{prefix}_source={source}, " if source else ""
    return f"{key}={getattr(cfg, key)} ({where}{prefix}_split={getattr(cfg, f'{prefix}_split')})"


def _load(cfg: TrainConfig, key: str, limit: int, fraction: float = 1.0) -> list[Problem]:
    """The problems of one split of the run, or a DataError naming the setting and the file."""
    prefix = "eval" if key == "eval_dataset" else key
    name = getattr(cfg, key)
    size = {"size": limit} if name.split(":")[0] == "synthetic" and limit else {}
    try:
        problems = load_split(name, getattr(cfg, f"{prefix}_source"),
                              split=getattr(cfg, f"{prefix}_split"), fraction=fraction,
                              seed=cfg.seed, source_option=f"{prefix}_source=", **size)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise DataError(f"{_describe(cfg, key)}: {message}") from e
    if not problems:
        skipped = getattr(problems, "skipped", 0)
        why = (f"all {skipped} rows were skipped (answer not a number or question empty)"
               if skipped else "it holds no rows")
        raise DataError(f"{_describe(cfg, key)}: no usable problems: {why}")
    return list(problems)[:limit] if limit else list(problems)


def load_data(cfg: TrainConfig) -> RunData:
    """The labeled, unlabeled and held-out problems of the run, each checked for what the run
    needs of it (rows left, answers, programs) before any model loads.

    A split the run does not use is not loaded (empty): labeled data serves SFT and the
    verifiable reward, unlabeled data the judges. Raises :class:`DataError` naming the setting
    and the file (an empty or unusable split, a row that is not a JSON object, a file that is
    not UTF-8, a missing file, an unreachable hub)."""
    rl = cfg.rl_stage is not None
    labeled = unlabeled = []
    if "sft" in cfg.stages or (rl and cfg.coef_vr > 0):
        labeled = _load(cfg, "labeled", cfg.max_train)
    if rl and (cfg.coef_yon > 0 or cfg.coef_rerank > 0):
        unlabeled = _load(cfg, "unlabeled", cfg.max_unlabeled, cfg.unlabeled_fraction)
    test = _load(cfg, "eval_dataset", cfg.max_eval)  # evaluated before and after every run
    if "sft" in cfg.stages:
        missing = sum(p.program is None for p in labeled)
        if missing:
            raise DataError(f"{_describe(cfg, 'labeled')}: SFT needs programs; {missing} of "
                            f"{len(labeled)} labeled problems have none")
    if rl and cfg.coef_vr > 0 and any(p.answer is None for p in labeled):
        raise DataError(f"{_describe(cfg, 'labeled')}: the verifiable reward needs answers; "
                        "some rows have none")
    if any(p.answer is None for p in test):
        raise DataError(f"{_describe(cfg, 'eval_dataset')}: evaluation needs answers; some rows "
                        "have none")
    return RunData(labeled, unlabeled, test)


# ---------------------------------------------------------------------------- tiny models
def _cache(cfg: TrainConfig) -> Path:
    return Path(os.path.expanduser(cfg.cache_dir))


def _key(**parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def _atomic_dir(final: Path, build) -> Path:
    """Run ``build(tmp)`` into a temporary directory and rename it to ``final``, unless
    ``final`` exists already (a cache hit; see ``rlkd_fast.atomic.write_dir``)."""
    def seeded(tmp: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # a cache miss must not change the run's RNG
            build(tmp)

    return atomic.write_dir(final, seeded)


def _tiny_tokenizer_dir(cfg: TrainConfig) -> Path:
    from rlkd_fast.tiny import train_tokenizer

    final = _cache(cfg) / f"tiny-tokenizer-{_key(v=TINY_VERSION)}"

    def build(tmp: Path) -> None:
        corpus = load_split("synthetic", split="train", size=3000, seed=1234)
        texts = [pot_prompt(p.question) + program_body(p.program) for p in corpus]
        texts += [judge_prompt(p.question, p.program) + " Yes" for p in corpus[:500]]
        train_tokenizer(texts).save_pretrained(tmp)

    return _atomic_dir(final, build)


def resolve_student(cfg: TrainConfig, data: RunData, main: bool = True) -> str:
    """The student's hub id or directory; for ``tiny``, an untrained tiny model (cached)."""
    if cfg.student != "tiny":
        return cfg.student
    from transformers import AutoTokenizer

    from rlkd_fast.tiny import tiny_causal_lm

    tok_dir = _tiny_tokenizer_dir(cfg)
    final = _cache(cfg) / ("tiny-student-" + _key(v=TINY_VERSION, h=cfg.tiny_hidden,
                                                   l=cfg.tiny_layers, seed=cfg.seed))

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        heads = max(1, cfg.tiny_hidden // 32)
        model = tiny_causal_lm(tok, hidden_size=cfg.tiny_hidden, layers=cfg.tiny_layers,
                               heads=heads, max_positions=1024, seed=cfg.seed)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    if main:
        _atomic_dir(final, build)
    return str(final)


def load_policy(cfg: TrainConfig, path: str | Path, device: torch.device,
                with_value: bool | None = None) -> tuple[PolicyWithValue, object]:
    """The student as a :class:`PolicyWithValue` (fp32, or bf16 on CUDA with ``bf16``); the
    value head (PPO only, by default) is initialised from the global RNG or loaded from
    ``path/value_head.pt``."""
    from rlkd_fast.models import load_causal_lm

    dtype = torch.bfloat16 if (device.type == "cuda" and cfg.bf16) else torch.float32
    lm, tok = load_causal_lm(path, device=device, dtype=dtype)
    if with_value is None:
        with_value = cfg.rl_stage != "grpo"
    policy = PolicyWithValue(lm, with_value=with_value).to(device)
    policy.load_value_head(path)
    return policy, tok


def save_atomic(model, tokenizer, path: str | Path) -> Path:
    """Save a model and tokenizer to ``path``, replacing what is there, such that a complete
    copy (the old or the new) exists at every moment (``rlkd_fast.atomic.write_dir``)."""
    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic.write_dir(path, build, replace=True)


def frozen_copy(policy: PolicyWithValue) -> PolicyWithValue:
    """The reference model: a frozen copy of the policy's LM (no value head)."""
    ref = PolicyWithValue(copy.deepcopy(policy.lm), with_value=False)
    ref.requires_grad_(False)
    return ref.eval()


def warmup_cosine(opt: torch.optim.Optimizer, total: int, warmup_frac: float = 0.05):
    warm = max(1, int(total * warmup_frac))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ---------------------------------------------------------------------------- rewarders
def open_executor(cfg: TrainConfig):
    from rlkd_fast.executor import PotExecutor

    return PotExecutor(workers=cfg.exec_workers, timeout_s=cfg.exec_timeout_s,
                       preload=("math", "sympy"), isolation=cfg.exec_isolation,
                       conventions="reft")


def _tiny_judge_dir(cfg: TrainConfig, device: torch.device) -> Path:
    """Teach (once) and cache the tiny Yes/No judge of the default run."""
    from transformers import AutoTokenizer

    from rlkd_fast.judges import resolve_token_ids
    from rlkd_fast.teacher import judge_examples, learn_to_solve, teach_judge
    from rlkd_fast.tiny import tiny_causal_lm

    tok_dir = _tiny_tokenizer_dir(cfg)
    final = _cache(cfg) / ("tiny-judge-" + _key(v=TINY_VERSION, seed=cfg.seed,
                                                 n=cfg.tiny_judge_problems,
                                                 epochs=cfg.tiny_judge_epochs,
                                                 solve=cfg.tiny_judge_sft_epochs,
                                                 data=cfg.labeled))

    def build(tmp: Path) -> None:
        print("teaching the tiny judge (first run only; cached in "
              f"{final})", file=sys.stderr)
        tok = AutoTokenizer.from_pretrained(tok_dir)
        tok.padding_side = "left"
        # The judge learns from its own problems: a seed no student split uses.
        name = cfg.labeled if cfg.labeled.startswith("synthetic") else "synthetic"
        corpus = load_split(name, split="train", size=cfg.tiny_judge_problems, seed=777)
        with open_executor(cfg) as ex:
            examples = judge_examples([p.question for p in corpus],
                                      [p.program for p in corpus],
                                      [p.answer for p in corpus], ex.run, seed=cfg.seed,
                                      wrong_per_right=1)
        prompts = [judge_prompt(q, prog) for q, prog, _ in examples]
        labels = [ok for _, _, ok in examples]
        model = tiny_causal_lm(tok, hidden_size=128, layers=2, heads=4, max_positions=1024,
                               seed=cfg.seed + 1).to(device)
        if cfg.tiny_judge_sft_epochs > 0:
            learn_to_solve(model, tok, corpus, header_of, cfg.tiny_judge_sft_epochs,
                           seed=cfg.seed, progress=cfg.progress)
        teach_judge(model, tok, prompts, labels, resolve_token_ids(tok, ["Yes"]),
                    resolve_token_ids(tok, ["No"]), epochs=cfg.tiny_judge_epochs,
                    batch_size=32, lr=1e-3,
                    seed=cfg.seed, progress=cfg.progress)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_dir(final, build)


def load_yon_judge(cfg: TrainConfig, data: RunData, device: torch.device, main: bool = True,
                   acc=None):
    from rlkd_fast.judges import YoNJudge

    judge_device = torch.device(cfg.judge_device) if cfg.judge_device else device
    path = cfg.judge
    if cfg.judge == "tiny":
        if main:
            path = _tiny_judge_dir(cfg, judge_device)
        if acc is not None:
            acc.wait_for_everyone()
        path = _tiny_judge_dir(cfg, judge_device)
    kwargs = {"template": cfg.judge_template} if cfg.judge_template else {}
    return YoNJudge.from_pretrained(path, device=judge_device, tau=cfg.judge_tau,
                                    delta=cfg.judge_delta, min_lines=cfg.judge_min_lines,
                                    batch_size=cfg.judge_batch_size, **kwargs)


def load_reranker(cfg: TrainConfig, device: torch.device):
    from rlkd_fast.judges import RerankJudge

    return RerankJudge.from_pretrained(cfg.reranker, device=device)


def prompt_settings(cfg: TrainConfig) -> dict:
    """What a saved policy records of how it was prompted (:func:`prompts.save_prompt_settings`)."""
    return {"prompt_style": cfg.prompt_style, "anti_hacking": cfg.anti_hacking_suffix,
            "max_prompt_tokens": cfg.max_prompt_tokens, "max_new_tokens": cfg.max_new_tokens}


def student_prompt(cfg: TrainConfig, question: str) -> str:
    """The student's prompt in the run's ``prompt_style``."""
    return prompts.student_prompt(question, cfg.prompt_style, cfg.anti_hacking_suffix)
