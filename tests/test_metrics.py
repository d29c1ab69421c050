"""The run's outputs: the overview figure comes with the plain install and shows each panel's
series at the right RL steps; optional TensorBoard is mentioned once."""

from __future__ import annotations

import ast
import os
import re
import sys

import pytest
from helpers import REPO

from rlkd_fast import metrics
from rlkd_fast.metrics import MetricsLog, overview_figure, plot_curves, smooth

SFT_STEPS = 10


def records() -> list[dict]:
    """10 SFT steps, then 40 GRPO steps; evaluations before RL, at RL step 20 and at the end."""
    out = [{"step": s, "stage": "sft", "sft/loss": 5.0 / s} for s in range(1, SFT_STEPS + 1)]
    out.append({"step": SFT_STEPS, "eval/accuracy": 0.40, "eval/tag": "initial"})
    for i in range(1, 41):
        out.append({"step": SFT_STEPS + i, "stage": "grpo", "reward/vr": float(i % 2),
                    "reward/yon": 0.7, "vr/kl": 0.001 * i, "yon/kl": 0.002 * i,
                    "vr/entropy": 2.0, "response/vr_tokens": 30.0 + i,
                    "response/vr_short_frac": 0.25, "judge/yon_auc": 0.6,
                    "judge/yon_spread": 0.01})
        if i in (20, 40):
            out.append({"step": SFT_STEPS + i, "eval/accuracy": 0.40 + i / 200,
                        "eval/tag": f"step{i}"})
    return out


def panel(fig, prefix: str):
    found = [ax for ax in fig.axes if ax.get_title().startswith(prefix)]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def test_the_plain_install_brings_matplotlib():
    """Pictures by default: matplotlib is in setup.py's install_requires, not in an extra;
    TensorBoard stays optional."""
    tree = ast.parse((REPO / "setup.py").read_text())
    (call,) = [n for n in ast.walk(tree)
               if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    args = {k.arg: ast.literal_eval(k.value) for k in call.keywords
            if k.arg in ("install_requires", "extras_require")}
    names = [re.split(r"[<>=!;\[ ]", r)[0] for r in args["install_requires"]]
    assert "matplotlib" in names and "tensorboard" not in names
    assert "tensorboard" in {r for extra in args["extras_require"].values() for r in extra}


def test_smooth_keeps_constants_and_tames_noise_without_lag():
    assert smooth([0.7] * 50, 10) == pytest.approx([0.7] * 50)
    assert smooth([1.0, 3.0, 2.0], 1) == [1.0, 3.0, 2.0]  # a window of one point: raw
    assert smooth([1.0, 3.0, 2.0, 6.0], 3) == pytest.approx([1.0, 2.0, 11 / 3, 6.0])
    noisy = [float(i % 2) for i in range(200)]
    assert all(0.45 < v < 0.55 for v in smooth(noisy, 20)[10:-10])
    line = [2.0 * i for i in range(100)]  # a steady trend is kept as it is: no lag
    assert smooth(line, 10) == pytest.approx(line)


def test_overview_shows_every_series_at_its_rl_step():
    fig = overview_figure(records())
    rl_steps = list(range(1, 41))

    acc = panel(fig, "Held-out accuracy")
    assert acc.get_title() == "Held-out accuracy (greedy): 40.0% -> 60.0%"
    (line,) = acc.get_lines()
    assert list(line.get_xdata()) == [0, 20, 40]
    assert list(line.get_ydata()) == pytest.approx([40.0, 50.0, 60.0])

    reward = panel(fig, "Reward by source")
    vr_raw, vr_smooth, _, yon_smooth = reward.get_lines()
    assert list(vr_raw.get_xdata()) == rl_steps
    assert list(vr_raw.get_ydata()) == [float(i % 2) for i in rl_steps]
    assert vr_raw.get_alpha() < 0.5 and vr_smooth.get_alpha() in (None, 1.0)  # raw faint
    inner = vr_smooth.get_ydata()[5:-5]  # the end points stay raw
    assert max(inner) - min(inner) < 0.5
    assert list(yon_smooth.get_ydata()) == pytest.approx([0.7] * 40)
    assert [t.get_text() for t in reward.get_legend().get_texts()] == ["verifiable",
                                                                       "YoN judge"]

    kl = panel(fig, "KL to the reference")
    vr_kl, yon_kl = kl.get_lines()[::2]  # the raw series of each source
    assert list(vr_kl.get_ydata()) == pytest.approx([0.001 * i for i in rl_steps])
    assert list(yon_kl.get_ydata()) == pytest.approx([0.002 * i for i in rl_steps])
    short = panel(fig, "Short programs (< 4 lines)")
    assert list(short.get_lines()[0].get_ydata()) == pytest.approx([25.0] * 40)  # percent
    length = panel(fig, "Response length")
    assert list(length.get_lines()[0].get_ydata()) == [30.0 + i for i in rl_steps]

    judge = panel(fig, "YoN judge: agreement and spread")
    assert list(judge.get_lines()[0].get_ydata()) == pytest.approx([0.6] * 40)
    twins = [ax for ax in fig.axes if ax is not judge and ax.bbox.bounds == judge.bbox.bounds]
    assert len(twins) == 1 and twins[0].get_lines()[0].get_ydata()[-1] == pytest.approx(0.01)

    sft = panel(fig, "SFT warm-up loss")
    assert list(sft.get_lines()[0].get_xdata()) == list(range(1, SFT_STEPS + 1))
    assert sft.get_xlabel() == "SFT step"
    for ax in (acc, reward, kl, short, length, judge):
        assert ax.get_xlabel() == "RL step" and ax.get_ylabel()
        assert ax.get_xlim()[0] < 0 < 40 < ax.get_xlim()[1]


def test_panels_without_data_say_so():
    """An SFT-only run, and one without a judge: the figure still draws, empty panels say why."""
    sft_only = [r for r in records() if r.get("stage") == "sft" or r.get("eval/tag") == "initial"]
    fig = overview_figure(sft_only)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"not logged in this run", "no judge in this run"} <= texts
    assert panel(fig, "Held-out accuracy").get_title().endswith("40.0% -> 40.0%")


def test_plot_curves_writes_one_png(tmp_path):
    import matplotlib.image

    (path,) = plot_curves(records(), tmp_path)
    assert path == tmp_path / "curves.png" and path.stat().st_size > 10_000
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 1000 and height > 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_without_matplotlib_it_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert plot_curves(records(), tmp_path) == []
    assert "no curves.png, matplotlib is not installed" in capsys.readouterr().err


def test_missing_tensorboard_is_mentioned_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setattr(metrics, "_TENSORBOARD_SAID", False)
    logs = [MetricsLog(tmp_path / str(i)) for i in range(3)]
    logs[0].log(1, {"reward/vr": 0.5, "note": "x"})
    assert logs[0].records() == [{"step": 1, "reward/vr": 0.5, "note": "x"}]
    err = capsys.readouterr().err
    assert err.count("pip install tensorboard") == 1


def test_trimming_the_log_on_resume_never_loses_it(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.log(step, {"x": step})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process ends before the trimmed copy replaces the log

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(tmp_path, resume_step=3)
    monkeypatch.undo()
    assert [r["step"] for r in log.records()] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in MetricsLog(tmp_path, resume_step=3).records()] == [1, 2, 3]


def test_auc_is_the_mann_whitney_statistic():
    """Against the rank-sum formula (average ranks for ties), on random scores with ties."""
    import random

    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 40)
        scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, rng.random()]) for _ in range(n)]
        labels = [rng.random() < 0.4 for _ in range(n)]
        if all(labels) or not any(labels):
            assert metrics.auc(scores, labels) is None
            continue
        order = sorted(range(n), key=lambda i: scores[i])
        ranks = [0.0] * n
        i = 0
        while i < n:  # tied scores share the average of their ranks
            j = i
            while j + 1 < n and scores[order[j + 1]] == scores[order[i]]:
                j += 1
            for k in range(i, j + 1):
                ranks[order[k]] = (i + j) / 2 + 1
            i = j + 1
        pos = sum(labels)
        neg = n - pos
        rank_sum = sum(r for r, y in zip(ranks, labels) if y)
        expected = (rank_sum - pos * (pos + 1) / 2) / (pos * neg)
        assert metrics.auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert metrics.auc([0.9, 0.1], [True, False]) == 1.0
    assert metrics.auc([0.5, 0.5], [True, False]) == 0.5
