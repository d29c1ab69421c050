"""``python -m rlkd_fast.train``: SFT warm-up, then GRPO (the default) or PPO on mixed rewards.

    L = coef_vr * L_VR (labeled loader) + coef_yon * L_YoN (unlabeled) + coef_rerank * L_rerank

With no arguments it runs the embedded default, offline on a CPU: the demo's synthetic problems,
tiny student and the embedded checklist judge (``rlkd_fast.demo``), SFT warm-up, evaluation, GRPO
with coef_vr = coef_yon = 0.5, evaluation again; ``stages=sft,ppo`` runs PPO instead.
``--config run.yaml`` and ``key=value`` overrides set everything else (``rlkd_fast/configs/``
holds the paper's runs). ``--resume`` continues a killed run from its last checkpoint. Under
``accelerate launch`` it trains data-parallel (DDP).

One RL step, top to bottom (``Trainer.rl``): ``make_experience`` rolls out each loader whose
coefficient is not 0, runs the programs and asks the judges, scores the tokens' log-probs and
computes the advantages; ``update`` then takes the optimizer steps, each summing
``coef * loss`` over the loaders. PPO and GRPO differ only where ``rlkd_fast.ppo.ALGORITHMS``
says; the maths is in ``docs/method.md``.
"""

from __future__ import annotations

import sys

from rlkd_fast.config import PROG, TrainConfig, parse_command_line

if __name__ == "__main__":
    # Parse and validate before torch and the models load, so --help and configuration errors
    # answer at once.
    _CONFIG = parse_command_line()

import dataclasses
import json
import math
import os
import shlex
import signal
import threading
import time
from collections import defaultdict
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from rlkd_fast import evaluate as evaluation
from rlkd_fast import prompts, run_inputs
from rlkd_fast.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    save_atomic,
    save_checkpoint,
)
from rlkd_fast.checkpoint import set_rng_state as restore_rng
from rlkd_fast.executor import PotExecutor
from rlkd_fast.hub import ModelFilesError
from rlkd_fast.metrics import MetricsLog, auc, plot_curves
from rlkd_fast.models import disable_dropout
from rlkd_fast.policy import PolicyWithValue, SequenceBatch, frozen_copy
from rlkd_fast.ppo import ALGORITHMS, Experience, RLSettings, score_tokens
from rlkd_fast.prompts import count_program_lines, program_from_completion, program_header
from rlkd_fast.rewards import verifiable_reward
from rlkd_fast.rollout import Rollout, generate
from rlkd_fast.runlock import OutputDirBusy, RunLock
from rlkd_fast.sft import sft_loss


def warmup_cosine(opt: torch.optim.Optimizer, total: int, warmup_frac: float = 0.05):
    """The SFT learning rate: linear warm-up over ``warmup_frac`` of ``total`` steps, then a
    cosine decay to 0."""
    warm = max(1, int(total * warmup_frac))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def student_prompt(cfg: TrainConfig, question: str) -> str:
    """The student's prompt in the run's ``prompt_style``."""
    return prompts.student_prompt(question, cfg.prompt_style, cfg.anti_hacking_suffix)


def prompt_settings(cfg: TrainConfig) -> dict:
    """What a saved policy records of how it was prompted (:func:`prompts.save_prompt_settings`)."""
    return {"prompt_style": cfg.prompt_style, "anti_hacking": cfg.anti_hacking_suffix,
            "max_prompt_tokens": cfg.max_prompt_tokens, "max_new_tokens": cfg.max_new_tokens}


#: How often an epoch SFT checks the dev accuracy against ``sft_target_accuracy``.
SFT_CHECKS_PER_EPOCH = 4


class IndexStream:
    """Endless batches of indices into a data set: a fresh seeded permutation per epoch.

    Its position is part of the checkpoint, so a resumed run sees the same batches. A split the
    run does not use is empty: its stream exists but must never be drawn from."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch, self.pos = size, seed, 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=gen)

    def next(self, n: int) -> list[int]:
        if self.size < 1:
            raise ValueError("a data loader got an empty data set")
        out = []
        while len(out) < n:
            if self.pos == self.size:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation()
            take = min(n - len(out), self.size - self.pos)
            out += self._perm[self.pos:self.pos + take].tolist()
            self.pos += take
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._perm = self._permutation()


class CtrlC:
    """Ctrl-C (SIGINT) as a request: the first sets ``pressed`` (the loop then saves a
    checkpoint and exits), the second ends the process at once (the default action).

    Only in the main thread (where Python delivers signals); ``restore()`` puts the previous
    handler back."""

    def __init__(self):
        self.pressed = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        self.pressed = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("\nCtrl-C: saving a checkpoint after this step, then stopping "
              "(Ctrl-C again quits at once, without saving)", file=sys.stderr)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class TrainerState:
    """What a checkpoint holds besides the weights (``trainer_state.pt``), so that a resumed run
    continues exactly where the interrupted one was."""

    sft_step: int = 0
    sft_done: bool = False
    rl_step: int = 0
    initial_accuracy: float | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)  # one record per evaluation
    streams: dict[str, dict[str, int]] = field(default_factory=dict)  # IndexStream positions
    timers: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # run seconds
    elapsed: float = 0.0  # wall seconds of the whole run up to the checkpoint
    # The stage in progress's optimizer (and SFT's LR scheduler) state: SFT's while SFT is not
    # done, RL's after that; None at a stage's boundary.
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain containers (no copy of the optimizer state), as ``torch.save`` stores them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {
            "timers": dict(self.timers)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainerState:
        """The state a checkpoint saved; keys it does not know (``step``, ``rng``) are left out.
        Checkpoints written before this class named the optimizer state per stage."""
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in saved.items() if k in known})
        for old in ("sft_optimizer", "rl_optimizer"):
            state.optimizer = saved.get(old, state.optimizer)
        state.scheduler = saved.get("sft_scheduler", state.scheduler)
        state.timers = defaultdict(float, state.timers)
        return state


class Trainer:
    """Holds the run's models, data and state; ``run()`` executes the configured stages."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.t0 = time.time()
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        self.acc = Accelerator(cpu=cpu)
        if cpu and cfg.cpu_threads:
            # Spinning PyTorch threads and the executor's processes fight over few cores: under
            # load a forward+backward took 4x longer with PyTorch's default threads than with 1.
            torch.set_num_threads(cfg.cpu_threads)
        self.device = self.acc.device if cfg.device == "auto" or cpu else torch.device(cfg.device)
        self.main = self.acc.is_main_process
        self.out = Path(cfg.output_dir)
        self.algo = ALGORITHMS[cfg.rl_stage] if cfg.rl_stage else None  # PPO or GRPO, once
        self.settings = RLSettings.of(cfg)
        self.state = TrainerState()
        self.elapsed_before = 0.0  # wall seconds of the sessions before a resume
        torch.manual_seed(cfg.seed)  # identical initial weights (value head) on every rank

        self.data = run_inputs.load_data(cfg)  # read-only: bad data leaves output_dir untouched
        if cfg.rl_stage is not None and cfg.coef_yon > 0:  # a shipped judge: verified up front
            run_inputs.resolve_judge(cfg.judge)
        self.lock = RunLock(self.out) if self.main else None  # one run per output_dir
        self.student_path = run_inputs.resolve_student(cfg, main=self.main)
        self.acc.wait_for_everyone()
        with_value = self.algo is None or self.algo.value_head
        self.policy, self.tokenizer = run_inputs.load_policy(cfg, self.student_path,
                                                             self.device, with_value)
        rank = self.acc.process_index
        torch.manual_seed(cfg.seed + rank)  # but each rank samples its own rollouts
        self.ref: PolicyWithValue | None = None
        self.executor: PotExecutor | None = None  # opened on first use: see _executor()
        self.judges: dict[str, Any] = {}
        self.ctrl_c: CtrlC | None = None  # the Ctrl-C handler of the running loop
        self.stage_optim: tuple[Any, Any] | None = None  # (optimizer, scheduler) to checkpoint
        # Each rank draws its own batches (data parallel): seeds differ by rank.
        seed = cfg.seed + 1000 * rank
        self.streams = {
            "sft": IndexStream(len(self.data.sft), seed),
            "labeled": IndexStream(len(self.data.labeled), seed + 1),
            "unlabeled": IndexStream(len(self.data.unlabeled), seed + 2),
        }

    # ------------------------------------------------------------------ top level
    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            if self.ctrl_c is not None:
                self.ctrl_c.restore()
            if self.executor is not None:
                self.executor.close()
            if self.lock is not None:
                self.lock.release()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        resumed_from = self._maybe_resume() if cfg.resume else None
        self.session_start = (self.state.rl_step, self.state.sft_step)
        self.log = MetricsLog(self.out, resume_step=self._global_step() if resumed_from else None) \
            if self.main else None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        if "sft" in cfg.stages and not self.state.sft_done:
            self.sft()
        if self.state.initial_accuracy is None:
            self.state.initial_accuracy = self.evaluate("initial")
            self.checkpoint()
        if self.algo is not None:
            self.rl()
        final = self.evaluate("final")
        return self._finish(final, resumed_from)

    def _global_step(self) -> int:
        return self.state.sft_step + self.state.rl_step

    def _executor(self) -> PotExecutor:
        """The run's program executor, opened on first use and closed when the run ends."""
        if self.executor is None:
            self.executor = run_inputs.open_executor(self.cfg)
        return self.executor

    def _resume_optimizer(self, opt, sched=None) -> None:
        """Load the optimizer (and scheduler) state a resumed checkpoint saved for the stage
        that is starting; it is consumed (the next checkpoints save the live ones)."""
        if self.state.optimizer is not None:
            opt.load_state_dict(self.state.optimizer)
            if sched is not None:
                sched.load_state_dict(self.state.scheduler)
        self.state.optimizer = self.state.scheduler = None  # free the copy

    # ------------------------------------------------------------------ SFT
    def sft(self) -> None:
        """Supervised warm-up on the labeled programs: ``sft_epochs`` at most, stopped early once
        greedy accuracy on the dev problems reaches ``sft_target_accuracy`` (checked
        ``SFT_CHECKS_PER_EPOCH`` times an epoch)."""
        cfg = self.cfg
        problems = self.data.sft
        total = math.ceil(cfg.sft_epochs * len(problems) / cfg.sft_batch_size)
        if total == 0:
            self.state.sft_done = True
            return
        check_every = max(1, round(len(problems) / cfg.sft_batch_size / SFT_CHECKS_PER_EPOCH))
        opt = torch.optim.AdamW(self.policy.lm.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
        sched = warmup_cosine(opt, total)
        self._resume_optimizer(opt, sched)
        model, opt = self.acc.prepare(self.policy.lm, opt)
        self.stage_optim = (opt, sched)  # what SFT's checkpoints save until SFT is done
        model.train()
        bar = tqdm(total=total, initial=self.state.sft_step, desc="sft",
                   disable=not (cfg.progress and self.main))
        ctrl_c = self.ctrl_c = CtrlC()
        while self.state.sft_step < total and not self.state.sft_done:
            idx = self.streams["sft"].next(cfg.sft_batch_size)
            t = time.time()
            loss = sft_loss(model, self.tokenizer, [problems[i] for i in idx],
                            lambda q: student_prompt(cfg, q), cfg.max_prompt_tokens,
                            cfg.max_new_tokens, self.device)
            opt.zero_grad(set_to_none=True)
            self.acc.backward(loss)
            self.acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            self.state.sft_step += 1
            seconds = time.time() - t
            self.state.timers["sft"] += seconds
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if self.main:
                self.log.log(self._global_step(), {"stage": "sft", "sft/loss": loss.item(),
                                                   "lr": sched.get_last_lr()[0],
                                                   "time/sft": seconds})
            warm = bool(self.data.dev) and self.state.sft_step % check_every == 0 \
                and self._warm_enough()
            self.state.sft_done = warm or self.state.sft_step >= total
            if self.state.sft_done:
                self.stage_optim = None  # a finished stage's optimizer is not needed again
            saved = self.state.sft_done or (
                cfg.save_every and self.state.sft_step % (cfg.save_every * 5) == 0)
            if saved:
                self.checkpoint()
            if self._agree(ctrl_c.pressed):
                bar.close()
                self._stop(saved)
        self.state.sft_done = True
        ctrl_c.restore()
        bar.close()
        model.eval()

    def _warm_enough(self) -> bool:
        """Whether greedy accuracy on the dev problems has reached ``sft_target_accuracy``
        (measured on the main process, agreed by every rank; logged as ``sft/dev_accuracy``)."""
        reached = False
        if self.main:
            t = time.time()
            accuracy = self._greedy(self.data.dev)["greedy_acc"]
            self.state.timers["sft_check"] += time.time() - t
            self.log.log(self._global_step(), {"sft/dev_accuracy": accuracy})
            reached = accuracy >= self.cfg.sft_target_accuracy
        return self._agree(reached)

    # ------------------------------------------------------------------ RL
    def _sources(self) -> list[tuple[str, float]]:
        """The reward sources whose coefficient is not 0, with it."""
        cfg = self.cfg
        return [(s, c) for s, c in (("vr", cfg.coef_vr), ("yon", cfg.coef_yon),
                                    ("rerank", cfg.coef_rerank)) if c > 0]

    def rl(self) -> None:
        cfg = self.cfg
        if cfg.disable_dropout:
            disable_dropout(self.policy.lm)
        self.ref = self._reference() if cfg.kl_coef > 0 else None
        opt = torch.optim.AdamW([p for p in self.policy.parameters() if p.requires_grad],
                                lr=cfg.rl_lr, eps=1e-5, weight_decay=0.0)
        self._resume_optimizer(opt)
        ddp_policy, opt = self.acc.prepare(self.policy, opt)
        self.stage_optim = (opt, None)
        self._load_judges()
        bar = tqdm(total=cfg.rl_steps, initial=self.state.rl_step, desc=self.algo.name,
                   disable=not (cfg.progress and self.main))
        last_saved = last_eval = self.state.rl_step
        ctrl_c = self.ctrl_c = CtrlC()
        try:
            while self.state.rl_step < cfg.rl_steps:
                t = time.time()
                experiences, rollout_stats = self.make_experience()
                rollout_stats["time/rollout"] = time.time() - t
                # A rollout's phase times go on the first step it feeds, so each line's time/*
                # are that step's seconds and they add up to the run's.
                timing = {k: v for k, v in rollout_stats.items() if k.startswith("time/")}
                with closing(self.update(ddp_policy, opt, experiences)) as steps:
                    for stats in steps:
                        self.state.rl_step += 1
                        bar.update(1)
                        if self.main:
                            self.log.log(self._global_step(), {"stage": self.algo.name,
                                                               **rollout_stats, **timing, **stats})
                        timing = dict.fromkeys(timing, 0.0)
                        if self.state.rl_step >= cfg.rl_steps:
                            break
                bar.set_postfix({k.split("/")[-1]: f"{v:.2f}" for k, v in rollout_stats.items()
                                 if k.startswith("reward/")})
                step = self.state.rl_step
                # A rollout may take several optimizer steps: evaluate once the step count
                # crosses a multiple of eval_every (checkpoints likewise below).
                if cfg.eval_every and step // cfg.eval_every > last_eval // cfg.eval_every:
                    self.evaluate(f"step{step}")
                    last_eval = step
                if cfg.save_every and step - last_saved >= cfg.save_every:
                    self.checkpoint()
                    last_saved = step
                if self._agree(ctrl_c.pressed):
                    bar.close()
                    self._stop(saved=last_saved == step)
        finally:
            ctrl_c.restore()
            bar.close()
        self.checkpoint()

    def _reference(self) -> PolicyWithValue:
        """The frozen reference: the policy as RL found it, saved once so a resume reloads it."""
        path = self.out / "reference"
        if self.state.rl_step == 0 or not path.exists():
            ref = frozen_copy(self.policy)
            if self.main:
                save_atomic(ref.lm, self.tokenizer, path)
            self.acc.wait_for_everyone()
            return ref
        saved, _ = run_inputs.load_policy(self.cfg, path, self.device, with_value=False)
        return frozen_copy(saved)

    def _load_judges(self) -> None:
        sources = dict(self._sources())
        if "yon" in sources and "yon" not in self.judges:
            self.judges["yon"] = run_inputs.load_yon_judge(self.cfg, self.device)
        if "rerank" in sources and "rerank" not in self.judges:
            self.judges["rerank"] = run_inputs.load_reranker(self.cfg, self.device)

    @torch.no_grad()
    def make_experience(self) -> tuple[list[Experience], dict[str, float]]:
        """Roll out each active loader, reward the programs, score the tokens, compute the
        advantages; returns one :class:`Experience` per loader and the rollout's stats."""
        stats: dict[str, float] = {}
        before = dict(self.state.timers)
        batches = self._rollouts()
        # The programs run in the C++ executor's processes while the judges score on this one:
        # the labeled loader's for its reward, an unlabeled one's (where the data has answers)
        # only to report how well its judge agrees with execution.
        running = {source: self._executor().submit(programs)
                   for source, (rows, _, programs) in batches.items()
                   if source == "vr" or all(p.answer is not None for p in rows)}
        rewards = {source: self._judge(source, *batches[source], stats)
                   for source in ("yon", "rerank") if source in batches}
        # The log-probs are scored while the programs still run; the advantages wait for them.
        scored = {source: self._score(roll) for source, (_, roll, _) in batches.items()}
        if "vr" in running:
            rewards["vr"] = self._verify(running["vr"], batches["vr"][0], stats)
        experiences = []
        for source, (rows, roll, programs) in batches.items():
            if source != "vr" and source in running:
                self._monitor(source, running[source], rows, rewards[source], stats)
            self._response_stats(source, roll, programs, rewards[source], stats)
            experiences.append(self._experience(source, rewards[source], *scored[source]))
        for key in ("generate", "execute", "judge", "score"):  # this rollout's seconds
            stats[f"time/{key}"] = self.state.timers[key] - before.get(key, 0.0)
        stats["wall_seconds"] = self._elapsed()
        return experiences, stats

    def _rollouts(self) -> dict[str, tuple[list, Rollout, list[str]]]:
        """Per active loader: (the problems of each row, the rollout, the programs)."""
        cfg = self.cfg
        batches = {}
        unlabeled_idx = None
        for source, _ in self._sources():
            if source == "vr":
                problems = [self.data.labeled[i]
                            for i in self.streams["labeled"].next(cfg.rollout_batch)]
            else:  # judges share one unlabeled batch per step
                if unlabeled_idx is None:
                    unlabeled_idx = self.streams["unlabeled"].next(cfg.rollout_batch)
                problems = [self.data.unlabeled[i] for i in unlabeled_idx]
            t = time.time()
            k = self.algo.samples(self.settings)
            roll = generate(self.policy.lm, self.tokenizer,
                            [student_prompt(cfg, p.question) for p in problems],
                            max_new_tokens=cfg.max_new_tokens, do_sample=True,
                            temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                            num_samples=k, batch_size=max(64, k),
                            max_prompt_length=cfg.max_prompt_tokens,
                            engine=cfg.generation_engine, sampler=cfg.sampler)
            self.state.timers["generate"] += time.time() - t
            rows = [problems[i] for i in roll.prompt_index.tolist()]
            programs = [program_from_completion(text, primer=program_header(
                            p.question, cfg.anti_hacking_suffix))
                        for text, p in zip(roll.texts, rows, strict=True)]
            batches[source] = (rows, roll, programs)
        return batches

    def _judge(self, source: str, rows: list, roll: Rollout, programs: list[str],
               stats: dict[str, float]) -> torch.Tensor:
        """The rewards [N] of one judge; its extras (e.g. the Yes/No mass) go into ``stats``."""
        t = time.time()
        result = self.judges[source].score([p.question for p in rows], programs)
        for key, value in result.extras.items():
            if torch.is_tensor(value) and value.numel():
                stats[f"judge/{source}_{key}"] = value.float().mean().item()
        self.state.timers["judge"] += time.time() - t
        return result.reward.float().cpu()

    def _verify(self, pending, rows: list, stats: dict[str, float]) -> torch.Tensor:
        """The verifiable rewards [N] of the programs submitted to the executor."""
        t = time.time()
        results = pending.result()
        rewards = torch.as_tensor(verifiable_reward(results, [p.answer for p in rows]),
                                  dtype=torch.float32)
        stats["exec/ok_frac"] = sum(r.status == "ok" for r in results) / len(results)
        self.state.timers["execute"] += time.time() - t
        return rewards

    def _monitor(self, source: str, running, rows: list, rewards: torch.Tensor,
                 stats: dict[str, float]) -> None:
        """How a judge's rewards agree with execution on rows whose data has answers: reported
        only (an unlabeled loader's labels never train)."""
        t = time.time()
        correct = torch.as_tensor(verifiable_reward(running.result(), [p.answer for p in rows]),
                                  dtype=torch.float32).eq(1.0).tolist()
        self.state.timers["execute"] += time.time() - t
        stats[f"monitor/{source}_true_accuracy"] = sum(correct) / len(correct)
        agreement = auc(rewards.tolist(), correct)
        if agreement is not None:
            stats[f"judge/{source}_auc"] = agreement

    def _response_stats(self, source: str, roll: Rollout, programs: list[str],
                        rewards: torch.Tensor, stats: dict[str, float]) -> None:
        stats[f"reward/{source}"] = rewards.mean().item()
        if source != "vr":  # how much the judge tells the step's samples apart
            stats[f"judge/{source}_spread"] = rewards.std().item() if len(rewards) > 1 else 0.0
        lines = [count_program_lines(p) for p in programs]
        stats[f"response/{source}_short_frac"] = sum(n < evaluation.SHORT_LINES
                                                     for n in lines) / len(lines)
        stats[f"response/{source}_tokens"] = roll.response_mask.sum(1).float().mean().item()

    def _score(self, roll: Rollout) -> tuple[SequenceBatch, torch.Tensor, Any, Any]:
        """The rollout's batch and its old and reference log-probs and values: the "score" phase
        of the step. Old log-probs come from the sampling pass under ``old_logprobs=sampling``
        where the algorithm needs no values (GRPO), else from a forward of the policy."""
        batch = SequenceBatch(roll.prompt_ids, roll.prompt_mask, roll.response_ids,
                              roll.response_mask).to(self.device)
        t = time.time()
        sampled = roll.logprobs if self.cfg.old_logprobs == "sampling" else None
        old, ref, values = score_tokens(self.policy, self.ref, batch, self.cfg.temperature,
                                        sampled=sampled)
        self.state.timers["score"] += time.time() - t
        return batch, old, ref, values

    def _experience(self, source: str, rewards: torch.Tensor, batch: SequenceBatch,
                    old: torch.Tensor, ref: Any, values: Any) -> Experience:
        """A scored rollout and its rewards with their advantages."""
        t = time.time()
        rewards = rewards.to(self.device)
        advantages, returns = self.algo.advantages(rewards, batch, old, ref, values,
                                                   self.settings)
        self.state.timers["score"] += time.time() - t
        return Experience(source, batch, rewards, old, ref, advantages, values, returns)

    def update(self, ddp_policy, opt, experiences: list[Experience]):
        """PPO epochs over minibatches; yields the stats of each optimizer step. The policy is
        in train mode only while this runs: eval mode comes back however it ends (exhausted,
        closed early or raising)."""
        cfg = self.cfg
        coef = dict(self._sources())
        n = len(experiences[0])
        minibatches = max(1, n // min(cfg.minibatch_size, n))
        # Before the first optimizer step the policy is the one that sampled: with the sampled
        # log-probs as old ones, that minibatch takes the current ones (a ratio of exactly 1).
        on_policy_first = cfg.old_logprobs == "sampling" and not self.algo.value_head
        self.policy.train()
        try:
            for epoch in range(cfg.ppo_epochs):
                perms = {e.source: torch.randperm(len(e)) for e in experiences}
                for m in range(minibatches):
                    t = time.time()
                    opt.zero_grad(set_to_none=True)
                    step_stats: dict[str, float] = {}
                    for exp in experiences:
                        idx = perms[exp.source].chunk(minibatches)[m].to(self.device)
                        part = exp.select(idx)
                        if on_policy_first and epoch == 0 and m == 0:
                            part = dataclasses.replace(part, old_logprobs=None)
                        last = exp is experiences[-1]  # gradients sync across ranks once
                        with nullcontext() if last else self.acc.no_sync(ddp_policy):
                            loss, stats = self.algo.loss(ddp_policy, part, self.settings)
                            self.acc.backward(coef[exp.source] * loss)
                        step_stats.update({f"{exp.source}/{k}": v for k, v in stats.items()})
                        step_stats[f"{exp.source}/loss"] = loss.item()
                    grad_norm = self.acc.clip_grad_norm_(self.policy.parameters(),
                                                         cfg.max_grad_norm)
                    opt.step()
                    step_stats["time/update"] = time.time() - t
                    self.state.timers["update"] += step_stats["time/update"]
                    step_stats["grad_norm"] = float(grad_norm)
                    yield step_stats
        finally:
            self.policy.eval()

    # ------------------------------------------------------------------ evaluation, state
    def evaluate(self, tag: str) -> float:
        """Greedy accuracy on the held-out problems (main process; others wait)."""
        accuracy = 0.0
        if self.main:
            result = self._greedy(self.data.test)
            accuracy = result["greedy_acc"]
            self.state.evals.append({"tag": tag, "step": self.state.rl_step,
                                     "accuracy": accuracy, "short_share": result["short_share"],
                                     "seconds": result["seconds"]})
            self.log.log(self._global_step(), {"eval/accuracy": accuracy, "eval/tag": tag})
            print(f"[{tag}] held-out accuracy: {accuracy:.2%} on {len(self.data.test)} problems",
                  file=sys.stderr)
        self.acc.wait_for_everyone()
        return accuracy

    def _greedy(self, problems: list) -> dict[str, Any]:
        """:func:`rlkd_fast.evaluate.evaluate` of the policy on ``problems``, prompted as the
        run prompts it (greedy decoding; the policy's train/eval mode is kept)."""
        cfg = self.cfg
        return evaluation.evaluate(
            self.policy.lm, self.tokenizer, problems, executor=self._executor(),
            batch_size=64, max_new_tokens=cfg.max_new_tokens, prompt_style=cfg.prompt_style,
            anti_hacking=cfg.anti_hacking_suffix, max_prompt_length=cfg.max_prompt_tokens,
            engine=cfg.generation_engine)

    def _agree(self, flag: bool) -> bool:
        """Whether any rank saw ``flag`` (all ranks must stop at the same step)."""
        if self.acc.num_processes == 1:
            return flag
        return self.acc.reduce(torch.tensor([float(flag)], device=self.device), "max").item() > 0

    def _stop(self, saved: bool) -> None:
        """After a Ctrl-C: save a checkpoint at this step (unless just saved), say how to
        resume, and exit with code 130."""
        if not saved:
            self.checkpoint()
        if self.main:
            plot_curves(self.log.records(), self.out)
            ckpt = self.out / (self.out / "latest").read_text().strip()
            command = (f"python -m rlkd_fast.train --config "
                       f"{shlex.quote(str(self.out / 'config.json'))} --resume")
            print(f"\ninterrupted: {ckpt} holds step {self._global_step()} (RL step "
                  f"{self.state.rl_step}); resume with\n  {command}", file=sys.stderr)
        raise SystemExit(130)

    def checkpoint(self) -> None:
        """Save the weights and :class:`TrainerState` (with the running stage's optimizer)."""
        self.acc.wait_for_everyone()
        if self.main:
            opt, sched = self.stage_optim or (None, None)
            state = dataclasses.replace(
                self.state, streams={k: s.state() for k, s in self.streams.items()},
                elapsed=self._elapsed(),
                optimizer=None if opt is None else opt.state_dict(),
                scheduler=None if sched is None else sched.state_dict())
            save_checkpoint(self.out, self._global_step(), self.policy, state.to_dict(),
                            tokenizer=self.tokenizer, prompt_settings=prompt_settings(self.cfg))
        self.acc.wait_for_everyone()

    def _maybe_resume(self) -> str | None:
        # The main process repairs what a kill left (and warns); the others then only read.
        path = latest_checkpoint(self.out) if self.main else None
        self.acc.wait_for_everyone()
        if not self.main:
            path = latest_checkpoint(self.out, repair=False)
        if path is None:
            return None
        saved = load_trainer_state(path)
        fresh, _ = run_inputs.load_policy(self.cfg, path / "policy", self.device,
                                          with_value=False)
        self.policy.lm.load_state_dict(fresh.lm.state_dict())
        self.policy.load_value_head(path / "policy")
        self.state = TrainerState.from_dict(saved)
        for name, position in self.state.streams.items():
            self.streams[name].load(position)
        self.elapsed_before = self.state.elapsed
        restore_rng(saved["rng"])
        if self.main:
            print(f"resumed from {path}", file=sys.stderr)
        return str(path)

    def _elapsed(self) -> float:
        """Wall seconds of the whole run: the sessions before a resume (up to the checkpoint
        each resumed from) and this one."""
        return self.elapsed_before + time.time() - self.t0

    def _finish(self, final: float, resumed_from: str | None) -> dict[str, Any]:
        session = {"wall_seconds": time.time() - self.t0,
                   "steps": self.state.rl_step - self.session_start[0],
                   "sft_steps": self.state.sft_step - self.session_start[1]}
        summary = {
            "initial_accuracy": self.state.initial_accuracy,
            "final_accuracy": final,
            "steps": self.state.rl_step,  # the whole run's, over every resume
            "sft_steps": self.state.sft_step,
            "wall_seconds": self._elapsed(),
            "stages": self.cfg.stages,
            "coefficients": {"vr": self.cfg.coef_vr, "yon": self.cfg.coef_yon,
                             "rerank": self.cfg.coef_rerank},
            "eval_problems": len(self.data.test),
            "evals": self.state.evals,
            "time_split_seconds": dict(self.state.timers),  # whole-run totals per phase
            "resumed_from": resumed_from,
            "this_session": session,
        }
        if self.main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
            plot_curves(self.log.records(), self.out)
            self.log.close()
            resumed = (f" (this session: {session['steps']} RL steps, "
                       f"{session['wall_seconds']:.0f} s)" if resumed_from else "")
            print(f"accuracy {summary['initial_accuracy']:.2%} -> {final:.2%} after "
                  f"{summary['steps']} RL steps, {summary['wall_seconds']:.0f} s{resumed}; "
                  f"outputs in {self.out}", file=sys.stderr)
        if self.executor is not None:
            self.executor.close()
        return summary


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run ``cfg`` (as :func:`~rlkd_fast.config.parse_command_line` returns it); returns the
    summary."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()  # our own bars say what is going on
    try:
        trainer = Trainer(cfg)
    except run_inputs.DataError as err:  # the data is the user's to fix: no traceback
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (OutputDirBusy, ModelFilesError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(1)
    return trainer.run()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m rlkd_fast.train [--config FILE] [--resume] [--output-dir DIR] [key=value
    ...]``; ``--help`` lists every config field with its default."""
    return train(parse_command_line(argv))


if __name__ == "__main__":
    train(_CONFIG)
