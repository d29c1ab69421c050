"""Run outputs: one JSON line per step, TensorBoard when installed, and ``curves.png``, one
overview figure of the run, at the end."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlkd_fast import atomic


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The probability that a random positive scores above a random negative (ties count 1/2):
    the area under the ROC curve of ``scores`` [N] against boolean ``labels`` [N]. None when
    either class is empty (undefined)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


class MetricsLog:
    """Appends ``{"step": ..., **metrics}`` lines to ``metrics.jsonl``.

    On resume, lines past the checkpoint's step are dropped first, so a killed-and-resumed run
    ends with the same log as an uninterrupted one.
    """

    def __init__(self, output_dir: str | Path, resume_step: int | None = None):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= resume_step]
            # By rename: a kill while trimming must not lose the log.
            atomic.write_text(self.path, "".join(line + "\n" for line in kept))
        self.tb = _tensorboard(self.path.parent)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float):
                    self.tb.add_scalar(key, value, step)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


_TENSORBOARD_SAID = False


def _tensorboard(log_dir: Path):
    """A TensorBoard writer when ``tensorboard`` is installed (optional; said once if not)."""
    global _TENSORBOARD_SAID
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _TENSORBOARD_SAID:
            _TENSORBOARD_SAID = True
            print("metrics: metrics.jsonl and curves.png only; for TensorBoard logs too, "
                  "pip install tensorboard", file=sys.stderr)
        return None
    return SummaryWriter(str(log_dir / "tensorboard"))


# ---------------------------------------------------------------------------- the overview
RL_STAGES = ("ppo", "grpo")
SOURCES = ("vr", "yon", "rerank")
SOURCE_NAMES = {"vr": "verifiable", "yon": "YoN judge", "rerank": "reranker"}
COLORS = {"vr": "tab:blue", "yon": "tab:orange", "rerank": "tab:green"}


def smooth(values: list[float], window: float) -> list[float]:
    """Centred moving average over about ``window`` points, narrowed symmetrically near the
    ends (the end points stay raw). Centred, not trailing: the figure is drawn after the fact,
    and a trailing average lags a steep curve; a straight trend is kept as it is."""
    sums = [0.0]
    for v in values:
        sums.append(sums[-1] + v)
    n, out = len(values), []
    for i in range(n):
        half = min(int(window) // 2, i, n - 1 - i)
        out.append((sums[i + half + 1] - sums[i - half]) / (2 * half + 1))
    return out


def _window(points: int) -> float:
    """Smoothing window: a tenth of the run, so a run's trend reads the same at any length."""
    return max(1.0, points / 10)


def _rl_offset(records: list[dict[str, Any]]) -> int:
    """The global step at which RL began: logged steps count SFT steps first."""
    return max((r["step"] for r in records if r.get("stage") == "sft"), default=0)


def _series(records, key: str, offset: int, scale: float = 1.0):
    points = [(r["step"] - offset, r[key] * scale) for r in records
              if r.get("stage") in RL_STAGES and isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def _curves(ax, records, offset: int, keys: dict[str, str], scale: float = 1.0) -> bool:
    """Raw values faint, smoothed on top, one colour per source; False when nothing to plot."""
    drawn = False
    for source, key in keys.items():
        x, y = _series(records, key, offset, scale)
        if not x:
            continue
        color = COLORS.get(source)
        window = _window(len(x))
        ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(x, smooth(y, window), color=color, linewidth=1.8,
                label=SOURCE_NAMES.get(source, source))
        drawn = True
    if drawn and len(keys) > 1:
        ax.legend(fontsize=8, loc="best")
    return drawn


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _accuracy(ax, records, offset: int) -> None:
    points = [(r["step"] - offset, 100 * r["eval/accuracy"], r.get("eval/tag", ""))
              for r in records if isinstance(r.get("eval/accuracy"), int | float)]
    if not points:
        _empty(ax, "no evaluation logged")
        return
    x, y, _ = zip(*points, strict=True)
    ax.plot(x, y, marker="o", color="black", linewidth=1.5)
    for i, (px, py, _) in enumerate(points):
        if i and points[i - 1][:2] == (px, py):  # "final" right after the last periodic one
            continue
        ax.annotate(f"{py:.1f}", (px, py), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8)
    ax.set_ylim(0, max(100.0, max(y) + 5))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Held-out accuracy (greedy): {y[0]:.1f}% -> {y[-1]:.1f}%")


def _judge(ax, records, offset: int) -> None:
    """Agreement (AUC of its scores against the verifiable label) and spread of its scores."""
    auc = _series(records, "judge/yon_auc", offset)
    spread = _series(records, "judge/yon_spread", offset)
    if not auc[0] and not spread[0]:
        mass = _series(records, "judge/yon_mass", offset)
        if not mass[0]:
            _empty(ax, "no judge in this run")
            return
        _curves(ax, records, offset, {"yon": "judge/yon_mass"})
        ax.set_ylabel("P(Yes) + P(No)")
        ax.set_title("YoN judge: probability mass on Yes/No")
        return
    if auc[0]:
        ax.plot(*auc, color="tab:purple", alpha=0.25, linewidth=0.8)
        ax.plot(auc[0], smooth(auc[1], _window(len(auc[0]))), color="tab:purple",
                linewidth=1.8, label="agreement (AUC)")
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUC vs verifiable label (0.5 = chance)")
        ax.legend(fontsize=8, loc="upper left")
    if spread[0]:
        twin = ax.twinx() if auc[0] else ax
        twin.plot(spread[0], smooth(spread[1], _window(len(spread[0]))),
                  color="tab:brown", linewidth=1.5, label="spread (std of scores)")
        twin.set_ylabel("score spread (std)")
        twin.legend(fontsize=8, loc="upper right")
    ax.set_title("YoN judge: agreement and spread")


def overview_figure(records: list[dict[str, Any]]):
    """One figure of the run at a glance (a grid of panels, x-axis in RL steps): reward per
    source (smoothed, raw values faint), held-out accuracy at every evaluation, KL to the
    reference, policy entropy, response length, the short-program share, the YoN judge's
    agreement and spread, and the SFT warm-up loss (in SFT steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from rlkd_fast.evaluate import SHORT_LINES

    offset = _rl_offset(records)
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    (reward, accuracy, kl, entropy), (length, short, judge, sft) = axes
    panels = [
        (reward, "Reward by source (smoothed; raw faint)", "mean reward",
         {s: f"reward/{s}" for s in SOURCES}, 1.0),
        (kl, "KL to the reference", "nats / token", {s: f"{s}/kl" for s in SOURCES}, 1.0),
        (entropy, "Policy entropy", "nats / token", {s: f"{s}/entropy" for s in SOURCES}, 1.0),
        (length, "Response length", "tokens", {s: f"response/{s}_tokens" for s in SOURCES}, 1.0),
        (short, f"Short programs (< {SHORT_LINES} lines)", "% of responses",
         {s: f"response/{s}_short_frac" for s in SOURCES}, 100.0),
    ]
    for ax, title, ylabel, keys, scale in panels:
        if _curves(ax, records, offset, keys, scale):
            ax.set_ylabel(ylabel)
        else:
            _empty(ax, "not logged in this run")
        ax.set_title(title)
    _accuracy(accuracy, records, offset)
    if not accuracy.get_title():
        accuracy.set_title("Held-out accuracy (greedy)")
    _judge(judge, records, offset)
    loss = [(r["step"], r["sft/loss"]) for r in records if "sft/loss" in r]
    if loss:
        x, y = zip(*loss, strict=True)
        sft.plot(x, y, color="tab:gray", alpha=0.3, linewidth=0.8)
        sft.plot(x, smooth(list(y), _window(len(y))), color="tab:gray", linewidth=1.8)
        sft.set_xlabel("SFT step")
        sft.set_ylabel("cross-entropy (nats / token)")
    else:
        _empty(sft, "no SFT in this run")
    sft.set_title("SFT warm-up loss")
    short.set_ylim(-2, 102)
    last = max([r["step"] - offset for r in records
                if r.get("stage") in RL_STAGES or "eval/accuracy" in r], default=0)
    for ax in (reward, accuracy, kl, entropy, length, short, judge):
        ax.set_xlabel("RL step")
        if ax.has_data():
            ax.set_xlim(-0.02 * max(last, 1), 1.02 * max(last, 1))  # the same steps everywhere
    for ax in axes.flat:
        if ax.has_data():
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def plot_curves(records: list[dict[str, Any]], output_dir: str | Path) -> list[Path]:
    """Write the overview figure (``overview_figure``) to ``<output_dir>/curves.png``.

    Returns the files written; none (after saying why) when matplotlib is missing, which only
    an install without the package's dependencies lacks."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("metrics: no curves.png, matplotlib is not installed (pip install matplotlib)",
              file=sys.stderr)
        return []
    import matplotlib.pyplot as plt

    fig = overview_figure(records)
    path = Path(output_dir) / "curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]
