"""The whole RL step on CPU: ``rlkd_fast.train`` against TRL's ``GRPOTrainer`` on the same work.

The work (issue 13, as ``/ANCHORS`` measured it): the default run's warm-up student (built once by
``python -m rlkd_fast.train stages=sft``, the default's SFT, and cached), VR-only GRPO, K=8
samples x 8 questions per rollout, temperature 0.7, lr 5e-5, KL 0.01 in the loss, advantages
r - group mean, 2 optimizer steps of 32 programs per rollout of 64, fp32, one PyTorch thread each.
TRL runs twice per pair: as configured by default (``gradient_checkpointing=True`` in TRL 1.16's
``GRPOConfig``) and tuned for this work (no checkpointing: the faster one on CPU); dropout off in
both; its programs run unsandboxed in a persistent pebble pool, as ReFT runs them. The three
alternate in one process, ``PAIRS`` times; each run's first rollout is a warm-up, the rest are
timed from one rollout's end to the last's (whole cycles: generation, rewards, scoring, updates).

Prints s/optimizer step of each, the ratios per pair (TRL / ours: > 1 means we are faster) and
our phase split; writes ``benchmarks/results/rl_loop.json``. Needs TRL (``pip install -e
".[bench]"``): skipped without it. Under ``CI=true`` a smoke size runs (an untrained tiny
student, short responses, one pair): its ratio means nothing. By hand the full size runs
(``RLKD_LOOP_PAIRS``, default 3; the warm-up student takes a few minutes the first time).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from benchmarks._harness import Table

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PAIRS = 1 if CI else int(os.environ.get("RLKD_LOOP_PAIRS", "3"))
ROLLOUTS = 2 if CI else 4  # per run; the first is a warm-up
CACHE = os.path.expanduser(os.environ.get("RLKD_BENCH_CACHE", "~/.cache/rlkd_fast"))
if CI:  # smoke: an untrained tiny student, 2 questions x 4 samples, short responses
    WORK = dict(rollout_batch=2, grpo_group=4, minibatch_size=4, max_new_tokens=16)
else:
    WORK = dict(rollout_batch=8, grpo_group=8, minibatch_size=32, max_new_tokens=96)
#: TRL's runs: name -> gradient checkpointing (TRL 1.16's default is on).
TRL_RUNS = {"trl default": True, "trl no ckpt": False}
COMMON = dict(temperature=0.7, top_k=0, top_p=1.0, rl_lr=5e-5, kl_coef=0.01, ppo_epochs=1,
              grpo_scale=False, coef_vr=1.0, coef_yon=0.0, coef_rerank=0.0, **WORK)


def warmup_student() -> str:
    """The default run's warm-up student: its SFT stage, run once into the cache."""
    if CI:
        from rlkd_fast.config import load_config
        from rlkd_fast.demo import cache

        return str(cache.student_dir(load_config(None, [f"cache_dir={CACHE}",
                                                        "tiny_hidden=32", "tiny_layers=1"])))
    out = Path(CACHE) / "bench-loop-warmup"
    if not (out / "summary.json").exists():  # written when the SFT run has finished
        print(f"building the warm-up student in {out} (the default's SFT; once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "rlkd_fast.train", "stages=sft",
                        f"output_dir={out}", f"cache_dir={CACHE}", "max_eval=8",
                        "progress=false", "resume=true"], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return str(out / (out / "latest").read_text().strip() / "policy")


# ------------------------------------------------------------------------------------ ours
def run_ours(student: str, out: Path, *extra: str) -> dict:
    """s/optimizer step of ``rlkd_fast.train`` (``extra``: more key=value settings) and its
    phase split per rollout."""
    from rlkd_fast.train import main

    args = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in COMMON.items()]
    # The default run's kernels on CPU are PyTorch's; the benchmarks' conftest switches on the
    # Triton interpreter (for the kernel benchmarks), which would slow every loss many times.
    interpret = os.environ.pop("TRITON_INTERPRET", None)
    try:
        main([f"output_dir={out}", f"cache_dir={CACHE}", f"student={student}", "stages=grpo",
              f"rl_steps={2 * ROLLOUTS}", "save_every=0", "max_eval=1", "progress=false",
              *args, *extra])
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r.get("stage") == "grpo"]
    firsts = rl[::2]  # each rollout's first step carries its phase times and end of scoring
    walls = [r["wall_seconds"] for r in firsts]
    phases = {k: statistics.mean(r[f"time/{k}"] for r in firsts[1:])
              for k in ("generate", "execute", "score")}
    phases["update"] = statistics.mean(r["time/update"] for r in rl[2:]) * 2
    return {"s_per_step": (walls[-1] - walls[0]) / (2 * (len(walls) - 1)), "phases": phases}


# ------------------------------------------------------------------------------------ TRL
def _run_program(program: str) -> float | None:
    """ReFT's way: exec the program in a reused worker and call ``solution()``."""
    namespace: dict = {}
    exec(program, namespace)  # unsandboxed, as ReFT (and TRL users) run them
    return float(namespace["solution"]())


class ProgramReward:
    """The verifiable reward (1 / 0.1 / 0) for TRL, programs run in a pebble pool of 2."""

    __name__ = "verifiable_reward"

    def __init__(self):
        from pebble import ProcessPool

        self.pool = ProcessPool(max_workers=2)

    def __call__(self, prompts, completions, question, answer, **kwargs) -> list[float]:
        from rlkd_fast.prompts import program_from_completion, program_header

        programs = [program_from_completion(c, primer=program_header(q))
                    for c, q in zip(completions, question)]
        futures = [self.pool.schedule(_run_program, args=(p,), timeout=2.0) for p in programs]
        rewards = []
        for future, gold in zip(futures, answer):
            try:
                value = future.result()
            except Exception:  # the program failed or timed out
                rewards.append(0.0)
                continue
            rewards.append(1.0 if abs(value - float(gold)) <= 1e-2 else 0.1)
        return rewards

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()


def run_trl(student: str, out: Path, reward: ProgramReward, checkpointing: bool) -> dict:
    """s/optimizer step of TRL's GRPOTrainer on the same work."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlkd_fast.config import load_config
    from rlkd_fast.prompts import student_prompt
    from rlkd_fast.run_inputs import load_data

    cfg = load_config(None, [f"cache_dir={CACHE}", "max_eval=1"])
    problems = load_data(cfg).labeled
    data = Dataset.from_list([{"prompt": student_prompt(p.question, cfg.prompt_style,
                                                        cfg.anti_hacking_suffix),
                               "question": p.question, "answer": float(p.answer)}
                              for p in problems])
    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    w = WORK
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=w["minibatch_size"],
        gradient_accumulation_steps=1, steps_per_generation=2,
        num_generations=w["grpo_group"], num_iterations=1, beta=COMMON["kl_coef"],
        loss_type="grpo", scale_rewards="none", temperature=COMMON["temperature"], top_k=0,
        top_p=1.0, max_completion_length=w["max_new_tokens"],
        learning_rate=COMMON["rl_lr"], lr_scheduler_type="constant", warmup_steps=0,
        adam_epsilon=1e-5, weight_decay=0.0, max_grad_norm=1.0, max_steps=2 * ROLLOUTS,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=checkpointing,
        disable_dropout=True, logging_steps=1, save_strategy="no", report_to="none", seed=0,
        dataloader_num_workers=0)
    tokenizer = AutoTokenizer.from_pretrained(student)
    trainer = GRPOTrainer(model=student, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=[StepClock()])
    trainer.train()
    return {"s_per_step": (ends[-1] - ends[1]) / (len(ends) - 2)}


# ------------------------------------------------------------------------------------ the run
def test_rl_step_against_trl():
    pytest.importorskip("trl", reason="TRL is not installed: pip install -e '.[bench]' "
                                      "(the loop benchmark compares against TRL's GRPOTrainer)")
    pytest.importorskip("pebble", reason="pebble runs TRL's programs: pip install pebble")
    student = warmup_student()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reward = ProgramReward()
    pairs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(PAIRS):
                runs = {"rlkd_fast": run_ours(student, Path(tmp) / f"ours{i}")}
                for name, checkpointing in TRL_RUNS.items():
                    runs[name] = run_trl(student, Path(tmp) / f"{name}{i}", reward,
                                         checkpointing)
                pairs.append(runs)
                print(f"pair {i + 1}: " + ", ".join(
                    f"{k} {v['s_per_step']:.3f} s/step" for k, v in runs.items()),
                    file=sys.stderr)
    finally:
        reward.close()
        torch.set_num_threads(threads)
    table = Table("rl_loop", gpu_benchmark=False)
    size = "smoke" if CI else "K=8 x 8 q, 96 new tokens"
    for i, runs in enumerate(pairs):
        for name, run in runs.items():
            split = ", ".join(f"{k} {v:.2f}" for k, v in run.get("phases", {}).items())
            table.add(op=f"pair {i + 1}", size=size, impl=name, ms=run["s_per_step"] * 1000,
                      note=f"per rollout (s): {split}" if split else "",
                      extra={"phases": run.get("phases")})
    table.report("trl no ckpt")
    for name in TRL_RUNS:
        ratios = [r[name]["s_per_step"] / r["rlkd_fast"]["s_per_step"] for r in pairs]
        print(f"{name} / ours per optimizer step: median {statistics.median(ratios):.2f}x, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} alternating pairs"
              f"{' (CI smoke size: not meaningful)' if CI else ''}; load average "
              f"{os.getloadavg()[0]:.1f}", file=sys.stderr)
        assert all(r > 0 for r in ratios)


#: Each lever of the loop switched off on its own (the ablation below).
LEVERS_OFF = {
    "old log-probs recomputed": "old_logprobs=recompute",
    "HF generate": "generation_engine=hf",
    "torch.multinomial draws": "sampler=multinomial",
    "PyTorch's default threads": "cpu_threads=0",
}


@pytest.mark.skipif(os.environ.get("RLKD_LOOP_ABLATE") != "1",
                    reason="the lever ablation runs by hand: RLKD_LOOP_ABLATE=1")
def test_levers_one_at_a_time():
    """Our loop with all levers, then with each switched off, alternating, ``PAIRS`` rounds."""
    student = warmup_student()
    threads = torch.get_num_threads()
    rounds = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(PAIRS):
                torch.set_num_threads(1)
                runs = {"all levers": run_ours(student, Path(tmp) / f"all{i}")}
                for name, setting in LEVERS_OFF.items():
                    # cpu_threads=0 leaves PyTorch's own default: one thread per core.
                    torch.set_num_threads(os.cpu_count() if setting == "cpu_threads=0" else 1)
                    runs[name] = run_ours(student, Path(tmp) / f"{name[:3]}{i}", setting)
                rounds.append(runs)
                print(f"round {i + 1}: " + ", ".join(
                    f"{k} {v['s_per_step']:.3f}" for k, v in runs.items()), file=sys.stderr)
    finally:
        torch.set_num_threads(threads)
    for name in LEVERS_OFF:
        ratios = [r[name]["s_per_step"] / r["all levers"]["s_per_step"] for r in rounds]
        print(f"{name}: {statistics.median(ratios):.2f}x the time of all levers (range "
              f"{min(ratios):.2f}-{max(ratios):.2f})", file=sys.stderr)
