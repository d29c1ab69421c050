"""What a training run loads before its first step: its data splits (checked), the student,
the judges and the program executor, as its config names them.

Hub ids and local directories are loaded as they are; the name ``tiny`` takes the offline demo's
models instead (``rlkd_fast.demo.cache``: built on first use, then cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlkd_fast.config import TrainConfig
from rlkd_fast.data import DATASETS, Problem, load_split
from rlkd_fast.executor import PotExecutor
from rlkd_fast.judges import RerankJudge, YoNJudge
from rlkd_fast.models import load_causal_lm
from rlkd_fast.policy import PolicyWithValue


@dataclass
class RunData:
    labeled: list[Problem]  # question, answer and program (SFT and the verifiable reward)
    unlabeled: list[Problem]  # questions (answers, where present, only monitor the judge)
    test: list[Problem]  # held-out, with answers
    dev: list[Problem]  # the first labeled problems, held out of SFT to check its accuracy

    @property
    def sft(self) -> list[Problem]:
        """The labeled problems SFT learns from (all but the dev problems)."""
        return self.labeled[len(self.dev):]


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
    generated = DATASETS.get(name.partition(":")[0])
    # a generated set is made at the size the run takes, not at its split's default size
    size = {"size": limit} if generated is not None and generated.generated and limit else {}
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
    dev = []
    if "sft" in cfg.stages:
        missing = sum(p.program is None for p in labeled)
        if missing:
            raise DataError(f"{_describe(cfg, 'labeled')}: SFT needs programs; {missing} of "
                            f"{len(labeled)} labeled problems have none")
        if cfg.sft_target_accuracy > 0:
            dev = labeled[:cfg.sft_dev_problems]
            if len(labeled) <= len(dev):
                raise DataError(f"{_describe(cfg, 'labeled')}: {len(labeled)} labeled problems "
                                f"leave none for SFT after sft_dev_problems="
                                f"{cfg.sft_dev_problems} (or set sft_target_accuracy=0)")
    if rl and cfg.coef_vr > 0 and any(p.answer is None for p in labeled):
        raise DataError(f"{_describe(cfg, 'labeled')}: the verifiable reward needs answers; "
                        "some rows have none")
    if any(p.answer is None for p in test):
        raise DataError(f"{_describe(cfg, 'eval_dataset')}: evaluation needs answers; some rows "
                        "have none")
    return RunData(labeled, unlabeled, test, dev)


# ---------------------------------------------------------------------------- models
def resolve_student(cfg: TrainConfig, main: bool = True) -> str:
    """The student's hub id or directory; for ``tiny``, the demo's untrained tiny model (built by
    the main process; the others only take its path)."""
    if cfg.student != "tiny":
        return cfg.student
    from rlkd_fast.demo import cache  # deferred: a run with real models never loads the demo

    return str(cache.student_dir(cfg, build=main))


def load_policy(cfg: TrainConfig, path: str | Path, device: torch.device,
                with_value: bool) -> tuple[PolicyWithValue, object]:
    """The student as a :class:`PolicyWithValue` (fp32, or bf16 on CUDA with ``bf16``); the
    value head (``with_value``: PPO's critic) is initialised from the global RNG or loaded from
    ``path/value_head.pt``."""
    dtype = torch.bfloat16 if (device.type == "cuda" and cfg.bf16) else torch.float32
    lm, tok = load_causal_lm(path, device=device, dtype=dtype)
    policy = PolicyWithValue(lm, with_value=with_value).to(device)
    policy.load_value_head(path)
    return policy, tok


# ---------------------------------------------------------------------------- rewarders
def open_executor(cfg: TrainConfig) -> PotExecutor:
    """The sandboxed executor of the run's programs (``exec_*`` settings, ReFT's conventions)."""
    return PotExecutor(workers=cfg.exec_workers, timeout_s=cfg.exec_timeout_s,
                       preload=("math", "sympy"), isolation=cfg.exec_isolation,
                       conventions="reft")


def resolve_judge(name: str) -> str:
    """The YoN judge's hub id or directory; for ``tiny``, the embedded judge shipped with the
    package, verified against its build record
    (:func:`rlkd_fast.demo.judge_artifact.embedded_judge_dir`)."""
    if name != "tiny":
        return name
    # deferred: a run with real models never loads the demo
    from rlkd_fast.demo.judge_artifact import embedded_judge_dir

    return str(embedded_judge_dir())


def load_yon_judge(cfg: TrainConfig, device: torch.device) -> YoNJudge:
    """The YoN judge on ``judge_device`` (default ``device``); for ``tiny``, the embedded judge
    shipped with the package, verified against its build record
    (:func:`rlkd_fast.demo.judge_artifact.embedded_judge_dir`)."""
    judge_device = torch.device(cfg.judge_device) if cfg.judge_device else device
    path = resolve_judge(cfg.judge)
    kwargs = {"template": cfg.judge_template} if cfg.judge_template else {}
    return YoNJudge.from_pretrained(path, device=judge_device, tau=cfg.judge_tau,
                                    delta=cfg.judge_delta, min_lines=cfg.judge_min_lines,
                                    batch_size=cfg.judge_batch_size, **kwargs)


def load_reranker(cfg: TrainConfig, device: torch.device) -> RerankJudge:
    return RerankJudge.from_pretrained(cfg.reranker, device=device)
