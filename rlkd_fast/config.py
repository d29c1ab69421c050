"""Training configuration: one dataclass, read from YAML and overridden from the command line.

    python -m rlkd_fast.train --config run.yaml rl_steps=200 coef_vr=0.5 coef_yon=0.5

Each field's one-line description lives in its ``metadata["help"]``: ``--help`` prints them with
the defaults, and so does ``help(TrainConfig)`` (the table below the class docstring is built
from them).

One rule turns YAML values and ``key=value`` text into field values (:func:`coerce`): text is
parsed as the field's type (``"3"`` -> 3, ``"a,b"`` -> ``["a", "b"]``, ``"none"`` -> None where
allowed); a typed YAML value must already have the field's type, except that an integer is
accepted where a number is. So ``rl_steps: 2.7``, ``sft_epochs: true`` or ``output_dir: {a: 1}``
are errors naming the file and the key, as ``rl_steps=2.7`` is on the command line.

Every value is then checked (``TrainConfig.validate``: ranges, finite numbers, device syntax, data
set names) and :func:`preflight_errors` checks what the machine must provide (CUDA devices, local
paths), so a bad run fails before it loads a model. Importing this module does not import torch:
``--help`` and configuration errors answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import shutil
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlkd_fast.hub import missing_local_path
from rlkd_fast.prompts import PROMPT_STYLES
from rlkd_fast.reductions import REDUCTIONS

STAGES = ("sft", "ppo", "grpo")
#: ``device`` values: auto, cpu, mps, or an accelerator type with an optional index.
DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults are the embedded offline default (a tiny student on
    synthetic problems, on a CPU); ``rlkd_fast/configs/paper_base.yaml`` holds the paper's."""

    # --- run ---------------------------------------------------------------------------------
    output_dir: str = field(default="runs/default", metadata={
        "help": "where checkpoints, metrics.jsonl, summary.json and plots go"})
    seed: int = field(default=0, metadata={
        "help": "seed of the weights, the data order and the sampling"})
    device: str = field(default="auto", metadata={
        "help": "auto | cpu | cuda | cuda:N | mps (auto: a GPU if there is one)"})
    stages: list[str] = field(default_factory=lambda: ["sft", "grpo"], metadata={
        "help": "stages in order: sft, and one of ppo / grpo (comma list)"})
    resume: bool = field(default=False, metadata={
        "help": "continue from output_dir's last checkpoint (as --resume)"})
    save_every: int = field(default=20, metadata={
        "help": "RL steps between checkpoints (SFT: 5x as many; 0: only at the end of a stage)"})
    eval_every: int = field(default=0, metadata={
        "help": "RL steps between held-out evaluations (0: before and after RL)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    # --- models ------------------------------------------------------------------------------
    student: str = field(default="tiny", metadata={
        "help": "the student: hub id, local directory, or tiny (built and cached locally)"})
    judge: str = field(default="tiny", metadata={
        "help": "the YoN judge: hub id, local directory, or tiny (the embedded judge shipped "
                "in rlkd_fast/demo/judge, built by python -m rlkd_fast.demo.build_judge)"})
    reranker: str | None = field(default=None, metadata={
        "help": "2-label sequence classifier (hub id or directory); needed when coef_rerank > 0"})
    judge_device: str | None = field(default=None, metadata={
        "help": "the judge's own device, e.g. cuda:1 (default: the student's)"})
    cache_dir: str = field(default="~/.cache/rlkd_fast", metadata={
        "help": "where the tiny tokenizer and student are cached"})
    tiny_hidden: int = field(default=128, metadata={"help": "tiny student: hidden size"})
    tiny_layers: int = field(default=2, metadata={"help": "tiny student: transformer layers"})
    bf16: bool = field(default=True, metadata={
        "help": "bf16 weights on CUDA (the CPU always computes in fp32)"})

    # --- data --------------------------------------------------------------------------------
    labeled: str = field(default="synthetic:2", metadata={
        "help": "labeled set (SFT, verifiable reward): gsm8k, reft, svamp, synthetic:N, ..."})
    labeled_source: str | None = field(default=None, metadata={
        "help": "file, directory or hub id of the labeled set (default: its hub id)"})
    labeled_split: str = field(default="train", metadata={"help": "split of the labeled set"})
    unlabeled: str = field(default="synthetic:2", metadata={
        "help": "data set whose questions the judges score (gsm8k_aug: questions only)"})
    unlabeled_source: str | None = field(default=None, metadata={
        "help": "file, directory or hub id of the unlabeled set (default: its hub id)"})
    unlabeled_split: str = field(default="unlabeled", metadata={
        "help": "split of the unlabeled set"})
    unlabeled_fraction: float = field(default=1.0, metadata={
        "help": "share of the unlabeled questions used, in (0, 1]"})
    eval_dataset: str = field(default="synthetic:2", metadata={
        "help": "held-out data set of the evaluations"})
    eval_source: str | None = field(default=None, metadata={
        "help": "file, directory or hub id of the held-out set (default: its hub id)"})
    eval_split: str = field(default="test", metadata={"help": "split of the held-out set"})
    max_train: int = field(default=2000, metadata={"help": "labeled problems used (0: all)"})
    max_unlabeled: int = field(default=2000, metadata={"help": "unlabeled questions used (0: all)"})
    max_eval: int = field(default=1000, metadata={"help": "held-out problems evaluated (0: all)"})
    max_prompt_tokens: int = field(default=160, metadata={
        "help": "a prompt keeps its last this-many tokens"})
    max_new_tokens: int = field(default=96, metadata={
        "help": "tokens generated per program at most"})
    anti_hacking_suffix: bool = field(default=False, metadata={
        "help": "append the \"full reasoning\" request to the program's docstring"})
    prompt_style: str = field(default="header", metadata={
        "help": "reft: ReFT's question prompt + program header (the paper's); header: header only"})

    # --- SFT ---------------------------------------------------------------------------------
    sft_epochs: float = field(default=10.0, metadata={
        "help": "warm-up epochs over the labeled problems (the most, with sft_target_accuracy)"})
    # A tiny model's accuracy jumps from ~0 to ~90% within a few epochs, at a point that moves
    # with the seed (fixed 4.5 epochs gave 42%, 55%, 4% for seeds 0, 1, 2): stopping at an
    # accuracy instead of an epoch count starts RL from a comparable student whatever the seed.
    sft_target_accuracy: float = field(default=0.4, metadata={
        "help": "stop SFT once greedy accuracy on the dev problems reaches this (0: never)"})
    sft_dev_problems: int = field(default=100, metadata={
        "help": "labeled problems held out of SFT to check sft_target_accuracy on"})
    sft_lr: float = field(default=3e-3, metadata={
        "help": "SFT peak learning rate (linear warm-up, cosine decay)"})
    sft_batch_size: int = field(default=32, metadata={"help": "problems per SFT step"})

    # --- RL (PPO / GRPO) ---------------------------------------------------------------------
    coef_vr: float = field(default=0.5, metadata={
        "help": "a1: weight of the verifiable reward's loss (labeled loader)"})
    coef_yon: float = field(default=0.5, metadata={
        "help": "a2: weight of the YoN judge's loss (unlabeled loader)"})
    coef_rerank: float = field(default=0.0, metadata={
        "help": "a3: weight of the reranker's loss (unlabeled loader); a1 + a2 + a3 = 1"})
    rl_steps: int = field(default=400, metadata={"help": "optimizer updates of the RL stage"})
    rl_lr: float = field(default=5e-5, metadata={"help": "RL learning rate (AdamW, constant)"})
    rollout_batch: int = field(default=8, metadata={
        "help": "questions per loader per rollout (x grpo_group for GRPO)"})
    grpo_group: int = field(default=8, metadata={"help": "GRPO: samples per question"})
    # A judge whose scores barely vary has its noise blown up to unit-size advantages by the
    # division by the group's std: off in the tiny default.
    grpo_scale: bool = field(default=False, metadata={
        "help": "GRPO: divide the advantages r - group mean by the group's std"})
    ppo_epochs: int = field(default=1, metadata={"help": "passes over each rollout"})
    minibatch_size: int = field(default=32, metadata={"help": "rollout rows per optimizer step"})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    value_clip: float = field(default=0.2, metadata={"help": "PPO value-loss clip"})
    vf_coef: float = field(default=0.5, metadata={"help": "PPO value-loss weight"})
    kl_coef: float = field(default=0.01, metadata={
        "help": "KL penalty to the reference (PPO: in the reward; GRPO: in the loss)"})
    gamma: float = field(default=1.0, metadata={"help": "PPO: GAE discount, in [0, 1]"})
    lam: float = field(default=0.95, metadata={"help": "PPO: GAE lambda, in [0, 1]"})
    whiten_advantages: bool = field(default=True, metadata={
        "help": "PPO: normalise the advantages of each rollout"})
    reduction: str = field(default="seq-mean-token-mean", metadata={
        "help": "loss reduction: seq-mean-token-mean or token-mean"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient-norm clip (SFT and RL)"})
    temperature: float = field(default=0.7, metadata={
        "help": "rollout sampling temperature (the loss's logits use it too)"})
    top_k: int = field(default=0, metadata={"help": "rollout top-k sampling (0: off)"})
    top_p: float = field(default=1.0, metadata={
        "help": "rollout nucleus sampling, in [0, 1] (1: off)"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight"})
    # Rollouts are scored in eval mode: with dropout on (Galactica, GPT-2: 0.1) the first
    # minibatch's ratio would not be 1 nor its KL 0. RL checkpoints record dropout 0.
    disable_dropout: bool = field(default=True, metadata={
        "help": "RL with dropout off, as TRL, OpenRLHF and verl do"})

    # --- judge -------------------------------------------------------------------------------
    judge_template: str | None = field(default=None, metadata={
        "help": "judge prompt with {question} and {program} (default: "
                "prompts.DEFAULT_JUDGE_TEMPLATE)"})
    judge_tau: float = field(default=1.0, metadata={
        "help": "temperature of s = sigmoid((z_Yes - z_No) / tau)"})
    judge_delta: float = field(default=0.5, metadata={
        "help": "judge scores below this give reward 0, in [0, 1]"})
    judge_min_lines: int = field(default=0, metadata={
        "help": "programs with fewer statement lines get judge reward 0 (anti-hacking)"})
    judge_batch_size: int = field(default=32, metadata={"help": "judge prompts per forward pass"})

    # --- executor ----------------------------------------------------------------------------
    exec_workers: int = field(default=2, metadata={"help": "program executor processes"})
    exec_timeout_s: float = field(default=2.0, metadata={
        "help": "wall-clock limit per program (seconds)"})
    exec_isolation: str = field(default="fork", metadata={
        "help": "fork: a fresh sandboxed child per program; worker: reused sandboxed workers "
                "(faster)"})

    # --- rollout engine and step overlap --------------------------------------------------------
    generation_engine: str = field(default="auto", metadata={
        "help": "rollouts and evaluation: static (a static KV cache, CUDA graphs on CUDA), hf "
                "(HF generate), auto (static where the model allows it)"})
    sampler: str = field(default="inverse_cdf", metadata={
        "help": "rollout draws (static engine): inverse_cdf (one uniform per row, fast) or "
                "multinomial (torch.multinomial: HF generate's draws under the same seed)"})
    old_logprobs: str = field(default="sampling", metadata={
        "help": "GRPO's old log-probs: sampling (the rollout's own; the first minibatch uses "
                "the current ones, exactly on-policy) or recompute (a second forward)"})
    cpu_threads: int = field(default=1, metadata={
        "help": "PyTorch threads on a CPU run (0: PyTorch's default); 1 leaves the other cores "
                "to the program executor, which runs while the log-probs are scored"})

    # ------------------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check every value; raises ValueError listing each bad field and why."""
        errors = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                errors.append(msg)

        for name in _NUMBERS:  # non-finite numbers would only fail deep inside a step
            value = getattr(self, name)
            need(value is None or math.isfinite(value), f"{name} must be finite, got {value}")
        need(bool(self.stages), "stages must name at least one of " + ", ".join(STAGES))
        for s in self.stages:
            need(s in STAGES, f"stages: unknown stage {s!r} (choose from {', '.join(STAGES)})")
        need("ppo" not in self.stages or "grpo" not in self.stages,
             "stages: choose one of ppo and grpo, not both")
        coefs = (self.coef_vr, self.coef_yon, self.coef_rerank)
        need(all(c >= 0 for c in coefs), f"coef_vr/coef_yon/coef_rerank must be >= 0, got {coefs}")
        rl = any(s in ("ppo", "grpo") for s in self.stages)
        need(not rl or abs(sum(coefs) - 1) < 1e-6,
             f"coef_vr + coef_yon + coef_rerank must sum to 1, got {sum(coefs):g}")
        need(not (rl and self.coef_rerank > 0 and not self.reranker),
             "coef_rerank > 0 needs reranker= (a hub id or local directory)")
        for name in ("rl_steps", "rollout_batch", "ppo_epochs", "minibatch_size", "grpo_group",
                     "sft_batch_size", "max_new_tokens", "max_prompt_tokens", "exec_workers",
                     "judge_batch_size", "tiny_hidden", "tiny_layers"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_every", "eval_every", "max_train", "max_unlabeled", "max_eval",
                     "judge_min_lines", "top_k", "sft_epochs", "sft_dev_problems"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "lam", "judge_delta", "top_p", "sft_target_accuracy"):
            v = getattr(self, name)
            need(0 <= v <= 1, f"{name} must be in [0, 1], got {v}")
        need(0 < self.unlabeled_fraction <= 1,
             f"unlabeled_fraction must be in (0, 1], got {self.unlabeled_fraction}")
        for name in ("sft_lr", "rl_lr", "judge_tau", "temperature", "exec_timeout_s"):
            need(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("clip", "value_clip", "vf_coef", "kl_coef", "max_grad_norm", "entropy_coef"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.reduction in REDUCTIONS, f"reduction must be one of {REDUCTIONS}")
        need(self.prompt_style in PROMPT_STYLES,
             f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}")
        need(self.generation_engine in ("auto", "static", "hf"),
             f"generation_engine must be auto, static or hf, got {self.generation_engine!r}")
        need(self.sampler in ("inverse_cdf", "multinomial"),
             f"sampler must be inverse_cdf or multinomial, got {self.sampler!r}")
        need(self.old_logprobs in ("sampling", "recompute"),
             f"old_logprobs must be sampling or recompute, got {self.old_logprobs!r}")
        need(self.cpu_threads >= 0, f"cpu_threads must be >= 0, got {self.cpu_threads}")
        need(self.exec_isolation in ("fork", "worker"),
             f"exec_isolation must be 'fork' or 'worker', got {self.exec_isolation!r}")
        for name in ("output_dir", "cache_dir", "student", "judge", "labeled_split",
                     "unlabeled_split", "eval_split"):  # an unset shell variable gives ""
            need(bool(str(getattr(self, name)).strip()), f"{name} must not be empty")
        need(DEVICE.fullmatch(self.device) is not None,
             f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        need(self.judge_device is None or (self.judge_device != "auto"
                                           and DEVICE.fullmatch(self.judge_device) is not None),
             f"judge_device must be cpu, mps, cuda or cuda:N, got {self.judge_device!r}")
        if self.judge_template is not None:
            for slot in ("{question}", "{program}"):
                need(slot in self.judge_template, f"judge_template lacks the placeholder {slot}")
        for name in ("labeled", "unlabeled", "eval_dataset"):
            errors += _dataset_errors(name, getattr(self, name), getattr(self, _SOURCE[name]))
        if errors:
            raise ValueError("invalid training config:\n  " + "\n  ".join(errors))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def rl_stage(self) -> str | None:
        return next((s for s in self.stages if s in ("ppo", "grpo")), None)


_HINTS = typing.get_type_hints(TrainConfig)
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_SOURCE = {"labeled": "labeled_source", "unlabeled": "unlabeled_source",
           "eval_dataset": "eval_source"}
# The first field of each group, for --help.
_SECTIONS = {"output_dir": "run", "student": "models", "labeled": "data", "sft_epochs": "SFT",
             "coef_vr": "RL (PPO / GRPO)", "judge_template": "judge", "exec_workers": "executor",
             "generation_engine": "rollout engine and step overlap"}


def _base_type(name: str) -> tuple[Any, bool]:
    """(the field's type without None, whether None is allowed)."""
    hint = _HINTS[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


_NUMBERS = tuple(n for n in FIELDS if _base_type(n)[0] in (int, float))


def _dataset_errors(key: str, name: str, source: str | None) -> list[str]:
    from rlkd_fast.data import DATASETS  # light: the hub loaders import lazily

    base = name.partition(":")[0]
    if base not in DATASETS:
        known = ", ".join(DATASETS)
        return [f"{key}: unknown data set {name!r} (known: {known}){_did_you_mean(base, DATASETS)}"]
    if DATASETS[base].generated and source:
        return [f"{key}={name} is generated: {_SOURCE[key]} must be unset"]
    return []


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def coerce(name: str, raw: Any) -> Any:
    """The value of field ``name`` from YAML or command-line ``raw``; ValueError when it does not
    fit the field's type (see the module docstring for the rule)."""
    target, optional = _base_type(name)
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in ("none",
                                                                                      "null")):
        if optional:
            return None
        raise ValueError(f"{name}: expected {_KIND[target]}, got null")
    if typing.get_origin(target) is list:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"{name}: expected a list of names, got {_describe(raw)}")
        return [i.strip() for i in items if i.strip()]
    if isinstance(raw, str):
        return _parse_text(name, target, raw)
    if target is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)  # YAML `sft_epochs: 10` is as good as 10.0
    if type(raw) is not target:
        raise ValueError(f"{name}: expected {_KIND[target]}, got {_describe(raw)}")
    return raw


_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _parse_text(name: str, target: type, text: str) -> Any:
    """A command-line (or quoted YAML) text as the field's type."""
    if target is str:
        return text
    if target is bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
    else:
        try:
            return target(text.strip())
        except ValueError:
            pass
    raise ValueError(f"{name}: expected {_KIND[target]}, got {text!r}")


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _apply(cfg: TrainConfig, values: dict[Any, Any], origin: str) -> list[str]:
    """Set ``values`` on ``cfg``; returns an error for each bad key, naming ``origin``."""
    errors = []
    for key, raw in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            errors.append(f"{origin}: unknown config key {key!r}{_did_you_mean(name, FIELDS)}")
            continue
        try:
            setattr(cfg, name, coerce(name, raw))
        except ValueError as err:
            errors.append(f"{origin}: {err}")
    return errors


SHIPPED = Path(__file__).parent / "configs"


def find_config(name: str | Path) -> Path:
    """A config file by path, or by the name of a shipped one (``galactica125m_gsm8k_vr_yon``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
    raise FileNotFoundError(f"config file not found: {name} (shipped configs: {names})")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping; a ``base:`` key names a file (relative to this one) it extends."""
    if path.resolve() in seen:
        raise ValueError(f"{path}: circular base: chain")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{path}{where}: not valid YAML ({what})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read: {err.strerror}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: base: expected a file name, got {_describe(base)}")
    base_path = path.parent / base if (path.parent / base).is_file() else find_config(base)
    return _read_yaml(base_path, (*seen, path.resolve())) | data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file (and its ``base:`` chain) <- ``key=value`` overrides, validated.

    Raises FileNotFoundError for a config name that is neither a file nor a shipped config,
    ValueError (naming the file or the command line, and each bad key) for anything else."""
    cfg = TrainConfig()
    errors = []
    if path is not None:
        path = find_config(path)
        errors += _apply(cfg, _read_yaml(path), str(path))
    pairs = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        pairs[key.strip().lstrip("-")] = value
    errors += _apply(cfg, pairs, "command line")
    if errors:
        raise ValueError("\n  ".join(errors))
    return cfg.validate()


def preflight_errors(cfg: TrainConfig) -> list[str]:
    """What the machine must provide for ``cfg``: the CUDA devices it names and the local paths
    of its models and data. Imports torch (call it after ``--help`` had its chance)."""
    errors = []
    for name in ("device", "judge_device"):
        value = getattr(cfg, name)
        if value and value.startswith("cuda"):
            errors += _cuda_errors(name, value)
    rl = cfg.rl_stage is not None
    used = {"student": True, "judge": rl and cfg.coef_yon > 0,
            "reranker": rl and cfg.coef_rerank > 0}
    for name in used:  # the data's paths are checked by load_data, before any model loads
        value = getattr(cfg, name)
        if used[name] and value and value != "tiny":
            message = missing_local_path(value, f"{name}={value}")
            errors += [message] if message else []
    return errors


def _cuda_errors(name: str, device: str) -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return [f"{name}={device}, but torch {torch.__version__} finds no CUDA device on this "
                "machine (use cpu or auto)"]
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        return [f"{name}={device}, but this machine has {count} CUDA device(s) (cuda:0.."
                f"cuda:{count - 1})"]
    return []


# ------------------------------------------------------------------------------ command line

PROG = "python -m rlkd_fast.train"


def _default_text(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return ",".join(value) if isinstance(value, list) else str(value)


def fields_help(width: int | None = None) -> str:
    """Every field with its default and description, grouped as in :class:`TrainConfig`
    (``width``: the terminal's by default, as argparse does)."""
    width = width or max(72, shutil.get_terminal_size().columns - 2)
    lines = []
    for f in FIELDS.values():
        if f.name in _SECTIONS:
            lines.append(f"\n{_SECTIONS[f.name]}:")
        head = f"  {f.name}={_default_text(f)}"
        if len(head) > 32:
            lines.append(head)
            head = ""
        lines += textwrap.wrap(f.metadata["help"], width, initial_indent=f"{head:<34}",
                               subsequent_indent=" " * 34, break_on_hyphens=False)
    return "\n".join(lines).lstrip("\n")


def build_parser() -> argparse.ArgumentParser:
    """The trainer's argument parser; its help lists every config field and default."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="RL-based knowledge distillation with an LLM judge (SFT, then PPO or GRPO).\n"
                    "With no arguments: the embedded offline default.",
        epilog="config fields (set as key=value, or in the --config YAML file):\n\n"
               + fields_help())
    parser.add_argument("--config", help="YAML file of config fields, or a shipped config's "
                                         "name (rlkd_fast/configs/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from output_dir's last checkpoint")
    parser.add_argument("--output-dir", help="where checkpoints, metrics and plots go "
                                             "(as output_dir=)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, anywhere among the arguments, e.g. rl_steps=200 "
                             "coef_vr=0 coef_yon=1")
    return parser


def parse_command_line(argv: list[str] | None = None) -> TrainConfig:
    """The validated config of a command line, checked against the machine
    (:func:`preflight_errors`). Prints the help, or the errors naming the file or key, and exits
    (status 2) when that is the answer."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    if args.resume:
        overrides.append("resume=true")
    try:
        cfg = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    errors = preflight_errors(cfg)
    if errors:
        parser.error("\n  ".join(errors))
    return cfg


def _document_fields() -> None:
    """Append the field table to TrainConfig's docstring (``help(TrainConfig)``)."""
    table = fields_help(width=92)
    TrainConfig.__doc__ = f"{TrainConfig.__doc__ or ''}\n\nFields (name=default):\n\n{table}"


_document_fields()
