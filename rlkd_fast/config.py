"""Training configuration: one dataclass, read from YAML and overridden from the command line.

    python -m rlkd_fast.train --config run.yaml rl_steps=200 coef_vr=0.5 coef_yon=0.5

Every value is checked up front (``TrainConfig.validate``) so a bad run fails before it loads a
model, with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlkd_fast.prompts import PROMPT_STYLES

STAGES = ("sft", "ppo", "grpo")
REDUCTIONS = ("seq-mean-token-mean", "token-mean")


@dataclass
class TrainConfig:
    """Every setting of a run. The defaults are the embedded offline default (a tiny student on
    synthetic problems, on a CPU); ``rlkd_fast/configs/paper_base.yaml`` holds the paper's."""

    # --- run ---------------------------------------------------------------------------------
    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    stages: list[str] = field(default_factory=lambda: ["sft", "grpo"])
    resume: bool = False
    save_every: int = 20  # optimizer steps between checkpoints (RL stages)
    eval_every: int = 0  # RL steps between evaluations (0: only before and after)
    progress: bool = True

    # --- models ------------------------------------------------------------------------------
    student: str = "tiny"  # hub id, local directory, or "tiny" (built and cached locally)
    judge: str = "tiny"  # YoN judge: hub id, local directory, or "tiny" (a locally taught judge)
    reranker: str | None = None  # sequence classifier (needed only when coef_rerank > 0)
    judge_device: str | None = None  # put the judge on its own device, e.g. "cuda:1"
    cache_dir: str = "~/.cache/rlkd_fast"
    tiny_hidden: int = 128
    tiny_layers: int = 2
    tiny_judge_problems: int = 2000  # problems the tiny judge is taught on (x2 with mistakes)
    tiny_judge_epochs: float = 2.0  # Yes/No teaching epochs
    tiny_judge_sft_epochs: float = 4.0  # the judge first learns to solve its own problems
    bf16: bool = True  # on CUDA only

    # --- data --------------------------------------------------------------------------------
    labeled: str = "synthetic:2"  # data set name (rlkd_fast.data.load_split); :2 = max 2 steps
    labeled_source: str | None = None
    labeled_split: str = "train"
    unlabeled: str = "synthetic:2"
    unlabeled_source: str | None = None
    unlabeled_split: str = "unlabeled"
    unlabeled_fraction: float = 1.0
    eval_dataset: str = "synthetic:2"
    eval_source: str | None = None
    eval_split: str = "test"
    max_train: int = 2000  # labeled problems used (0: all)
    max_unlabeled: int = 2000
    max_eval: int = 200
    max_prompt_tokens: int = 160
    max_new_tokens: int = 96
    anti_hacking_suffix: bool = False  # append the "full reasoning" sentence to the docstring
    # "reft": "Question:\n{q}\nAnswer reasoning:\n" + the primed def/docstring (the paper's);
    # "header": the primed def/docstring alone (half the prompt tokens; the tiny default's).
    prompt_style: str = "header"

    # --- SFT ---------------------------------------------------------------------------------
    sft_epochs: float = 4.5
    sft_lr: float = 3e-3
    sft_batch_size: int = 32

    # --- RL (PPO / GRPO) ---------------------------------------------------------------------
    coef_vr: float = 0.5  # a1: verifiable reward on the labeled loader
    coef_yon: float = 0.5  # a2: YoN judge on the unlabeled loader
    coef_rerank: float = 0.0  # a3: reranker on the unlabeled loader
    rl_steps: int = 400  # optimizer updates
    rl_lr: float = 5e-5
    rollout_batch: int = 8  # questions per loader per step (x grpo_group samples for GRPO)
    grpo_group: int = 8  # samples per question (GRPO)
    # GRPO advantages r - mean(group), divided by the group's std when true. A judge whose scores
    # barely vary has its noise blown up to unit-size advantages by that division.
    grpo_scale: bool = False
    ppo_epochs: int = 1
    minibatch_size: int = 32
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.5
    kl_coef: float = 0.01
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    reduction: str = "seq-mean-token-mean"
    max_grad_norm: float = 1.0
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    entropy_coef: float = 0.0
    # Dropout off in the RL stage (as TRL, OpenRLHF and verl do): rollouts are scored in eval
    # mode, so with dropout on (Galactica, GPT-2: 0.1) the first minibatch's ratio is not 1 nor
    # its KL 0. RL checkpoints then record dropout 0 in their config.
    disable_dropout: bool = True

    # --- judge -------------------------------------------------------------------------------
    judge_template: str | None = None  # None: the default judge prompt
    judge_tau: float = 1.0
    judge_delta: float = 0.5
    judge_min_lines: int = 0  # programs with fewer lines get judge reward 0 (anti-hacking)
    judge_batch_size: int = 32

    # --- executor ----------------------------------------------------------------------------
    exec_workers: int = 2
    exec_timeout_s: float = 2.0
    exec_isolation: str = "fork"

    # ------------------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        errors = []

        def need(ok: bool, msg: str) -> None:
            if not ok:
                errors.append(msg)

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
                     "judge_batch_size", "tiny_hidden", "tiny_layers", "tiny_judge_problems"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_every", "eval_every", "max_train", "max_unlabeled", "max_eval",
                     "judge_min_lines", "top_k", "sft_epochs", "tiny_judge_sft_epochs"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "lam", "judge_delta", "top_p"):
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
        need(self.exec_isolation in ("fork", "worker"),
             f"exec_isolation must be 'fork' or 'worker', got {self.exec_isolation!r}")
        if errors:
            raise ValueError("invalid training config:\n  " + "\n  ".join(errors))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def rl_stage(self) -> str | None:
        return next((s for s in self.stages if s in ("ppo", "grpo")), None)


def _coerce(name: str, raw: Any) -> Any:
    """Turn a YAML/CLI value into the field's type (``"3"`` -> 3, ``"a,b"`` -> [a, b])."""
    hint = typing.get_type_hints(TrainConfig)[name]
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if optional and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))):
        return None
    target = args[0] if optional else hint
    if typing.get_origin(target) is list:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return [str(i).strip() for i in items if str(i).strip()]
    if target is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    try:
        return target(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {target.__name__}, got {raw!r}") from None


def _apply(cfg: TrainConfig, values: dict[str, Any], origin: str) -> None:
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, raw in values.items():
        key = key.replace("-", "_")
        if key not in known:
            close = [k for k in known if key in k or k in key][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{origin}: unknown config key {key!r}{hint}")
        setattr(cfg, key, _coerce(key, raw))


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
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = path.parent / base if (path.parent / base).is_file() else find_config(base)
    return _read_yaml(base_path, (*seen, path.resolve())) | data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file (and its ``base:`` chain) <- ``key=value`` overrides, validated."""
    cfg = TrainConfig()
    if path is not None:
        path = find_config(path)
        _apply(cfg, _read_yaml(path), str(path))
    pairs = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        pairs[key.strip().lstrip("-")] = value
    _apply(cfg, pairs, "command line")
    return cfg.validate()
