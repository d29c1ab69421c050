"""Build the embedded judge shipped in ``rlkd_fast/demo/judge/``.

    python -m rlkd_fast.demo.build_judge [--out DIR] [--small] [--seed 0]

The offline default's judge is a tiny causal LM that answers "Is the above solution correct?"
with Yes or No (``docs/method.md``, "The embedded judge"). This command builds it from nothing
but the synthetic generator, the trainer and the executor, in four stages:

1. **students**: the default's warm-up (SFT until ``sft_target_accuracy``) for each seed of
   ``student_seeds``; their programs sampled at the default temperature on the judge's own
   training questions (the synthetic ``train`` split) are the mistakes the judge must catch;
2. **examples**: those samples, every gold program and ``corruptions`` corrupted copies of it
   (mistyped numbers, undefined names, changed operators), each labelled by running it;
3. **teaching**: a word-level tokenizer (one token per number and per name) and a small Llama
   taught on the judge prompt (:func:`rlkd_fast.demo.teacher.teach_judge`);
4. **check**: the paper's Table 3 protocol on held-out ``test`` questions with a fresh warm-up
   student (``check_seed``): pairwise accuracy of the Yes/No score, beside the judge's own
   log-likelihood (LL) baseline.

The judge directory gets the weights (safetensors), the tokenizer and ``build.json``: the
command, settings, data sizes, wall times, the check's figures and each file's SHA-256, which
:func:`rlkd_fast.demo.judge_artifact.embedded_judge_dir` verifies before every use.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rlkd_fast import atomic
from rlkd_fast.checkpoint import latest_checkpoint, save_model
from rlkd_fast.config import TrainConfig, load_config
from rlkd_fast.data import Problem, load_split
from rlkd_fast.demo import teacher
from rlkd_fast.demo.judge_artifact import BUILD_RECORD, EMBEDDED_JUDGE_DIR
from rlkd_fast.demo.tiny import tiny_causal_lm, train_word_tokenizer
from rlkd_fast.evaluate import sample_programs
from rlkd_fast.executor import PotExecutor
from rlkd_fast.judge_quality import collect_pairs, pairwise_accuracy
from rlkd_fast.judges import LogLikelihoodScorer, YoNJudge
from rlkd_fast.models import load_causal_lm
from rlkd_fast.prompts import judge_prompt

# Questions the judge learns from are drawn with this seed, which no default run uses.
JUDGE_DATA_SEED = 777


@dataclass(frozen=True)
class BuildSettings:
    """What a build does; :meth:`small` is the end-to-end test's size."""

    seed: int = 0
    dataset: str = "synthetic:2"
    student_seeds: tuple[int, ...] = (100,)
    student_questions: int = 1000  # judge-training questions each student answers
    samples: int = 8  # programs per question and student
    gold_problems: int = 4000  # gold programs, each with ``corruptions`` corrupted copies
    corruptions: int = 3
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    check_seed: int = 102
    check_pairs: int = 200
    check_questions: int = 1000  # held-out questions looked at, at most, to find the pairs
    student_overrides: tuple[str, ...] = ()  # extra TrainConfig key=value for the students

    @classmethod
    def small(cls, seed: int = 0) -> BuildSettings:
        return cls(seed=seed, dataset="synthetic:1", student_seeds=(100,), student_questions=8,
                   samples=2, gold_problems=16, corruptions=1, steps=3, batch_size=4,
                   hidden=16, layers=1, heads=2, check_pairs=2, check_questions=8,
                   student_overrides=("max_train=24", "sft_epochs=0.5", "sft_batch_size=8",
                                      "sft_target_accuracy=0", "max_eval=2", "tiny_hidden=16",
                                      "tiny_layers=1", "max_new_tokens=32"))


def _student_config(settings: BuildSettings, seed: int, output_dir: Path,
                    progress: bool) -> TrainConfig:
    return load_config(None, [
        "stages=sft", f"seed={seed}", f"output_dir={output_dir}", f"labeled={settings.dataset}",
        f"eval_dataset={settings.dataset}", f"progress={str(progress).lower()}", "coef_yon=0",
        *settings.student_overrides])


def warm_up_student(settings: BuildSettings, seed: int, workdir: Path,
                    progress: bool) -> tuple[Path, TrainConfig]:
    """The default run's warm-up for ``seed``: its final SFT checkpoint and its config."""
    from rlkd_fast.train import train

    cfg = _student_config(settings, seed, workdir / f"student-{seed}", progress)
    train(cfg)
    return latest_checkpoint(cfg.output_dir) / "policy", cfg


def student_samples(path: Path, cfg: TrainConfig, problems: Sequence[Problem], samples: int,
                    executor) -> list[tuple[str, str, bool]]:
    """(question, program, is_correct) for ``samples`` programs per problem, sampled as the
    run samples them and labelled by execution."""
    model, tok = load_causal_lm(path)
    programs = sample_programs(model, tok, problems, samples, True, prompt_style=cfg.prompt_style,
                               temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                               batch_size=64)
    rows = [p for p in problems for _ in range(samples)]
    return teacher.label_programs([(p.question, prog, p.answer) for p, prog in
                                   zip(rows, programs, strict=True)], executor.run)


def check_judge(judge_dir: Path, settings: BuildSettings, workdir: Path, executor,
                progress: bool) -> dict:
    """The paper's Table 3 protocol on held-out test questions with a fresh warm-up student."""
    path, cfg = warm_up_student(settings, settings.check_seed, workdir, progress)
    student, tok = load_causal_lm(path)
    problems = load_split(settings.dataset, split="test", size=settings.check_questions,
                          seed=settings.check_seed)
    pairs, stats = collect_pairs(student, tok, problems, executor, n=settings.check_pairs,
                                 samples=8, prompt_style=cfg.prompt_style,
                                 temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                 batch_size=64)
    yon = YoNJudge.from_pretrained(judge_dir, delta=0.0, batch_size=64)
    ll = LogLikelihoodScorer(yon.model, yon.tokenizer, batch_size=64)
    return {"collection": stats, "yon": pairwise_accuracy(yon, pairs),
            "ll": pairwise_accuracy(ll, pairs)}


def build(out: Path, settings: BuildSettings, progress: bool = True,
          command: str = "") -> dict:
    """Build the judge into ``out`` (written atomically) and return its build record."""
    t0, wall = time.time(), {}
    torch.manual_seed(settings.seed)
    with tempfile.TemporaryDirectory(prefix="rlkd-judge-build-") as work, \
            PotExecutor(workers=2, timeout_s=2.0, conventions="reft") as executor:
        workdir = Path(work)
        questions = load_split(settings.dataset, split="train", seed=JUDGE_DATA_SEED,
                               size=max(settings.gold_problems, settings.student_questions))
        sampled: list[tuple[str, str, bool]] = []
        for seed in settings.student_seeds:
            path, cfg = warm_up_student(settings, seed, workdir, progress)
            sampled += student_samples(path, cfg, questions[:settings.student_questions],
                                       settings.samples, executor)
        wall["students"] = time.time() - t0
        gold = questions[:settings.gold_problems]
        examples = teacher.judge_examples(
            [p.question for p in gold], [p.program for p in gold], [p.answer for p in gold],
            executor.run, seed=settings.seed, wrong_per_right=settings.corruptions)
        examples += [teacher.JudgeExample(q, prog, ok) for q, prog, ok in sampled]
        wall["examples"] = time.time() - t0 - wall["students"]
        texts = [judge_prompt(e.question, e.program) for e in examples]
        tok = train_word_tokenizer(texts)
        model = tiny_causal_lm(tok, hidden_size=settings.hidden, layers=settings.layers,
                               heads=settings.heads, max_positions=1024, seed=settings.seed)
        losses = teacher.teach_judge(model, tok, examples, steps=settings.steps,
                                     batch_size=settings.batch_size, lr=settings.lr,
                                     seed=settings.seed, progress=progress)
        wall["teaching"] = time.time() - t0 - wall["students"] - wall["examples"]
        draft = workdir / "judge"
        save_model(model, tok, draft)
        check = check_judge(draft, settings, workdir, executor, progress)
        wall["check"] = time.time() - t0 - sum(wall.values())
        record = {
            "command": command, "settings": dataclasses.asdict(settings),
            "data": {"student_samples": len(sampled),
                     "student_correct": sum(ok for _, _, ok in sampled),
                     "examples": len(examples),
                     "positives": sum(e.correct for e in examples),
                     "vocab": len(tok)},
            "teaching_loss": {"first_100": sum(losses[:100]) / len(losses[:100]),
                              "last_100": sum(losses[-100:]) / len(losses[-100:])},
            "check": check, "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
            "versions": {"torch": torch.__version__},
        }

        def write(tmp: Path) -> None:
            save_model(model, tok, tmp)
            record["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                               for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")

        atomic.write_dir(out, write, replace=True)
    return record


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m rlkd_fast.demo.build_judge",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(EMBEDDED_JUDGE_DIR),
                   help="where to write the judge (default: the package's embedded judge)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the judge's data, initialisation and teaching order")
    p.add_argument("--small", action="store_true", help="a tiny build (seconds), for tests")
    p.add_argument("--steps", type=int, default=None, help="teaching steps (default 2000)")
    p.add_argument("--cache-dir", default=None,
                   help="where the students' tiny tokenizer and model are cached (default: the "
                        "trainer's cache_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    settings = BuildSettings.small(args.seed) if args.small else BuildSettings(seed=args.seed)
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)
    if args.cache_dir:
        settings = dataclasses.replace(settings, student_overrides=(
            *settings.student_overrides, f"cache_dir={args.cache_dir}"))
    command = "python -m rlkd_fast.demo.build_judge " + " ".join(argv if argv is not None
                                                                 else sys.argv[1:])
    record = build(Path(args.out), settings, progress=not args.no_progress,
                   command=command.strip())
    check = record["check"]
    yon, ll = (("-" if check[k]["accuracy"] is None else f"{100 * check[k]['accuracy']:.1f}%")
               for k in ("yon", "ll"))
    print(f"judge written to {args.out}: pairwise accuracy {yon} on {check['yon']['n']} held-out "
          f"pairs (LL baseline {ll}), {sum(record['wall_seconds'].values()):.0f} s")
    return record


if __name__ == "__main__":
    main()
