"""Build the embedded judge shipped in ``rlkd_fast/demo/judge/``.

    python -m rlkd_fast.demo.build_judge [--out DIR] [--small]

The offline default's judge is a tiny causal LM that answers "Is the above solution correct?"
with Yes or No (``docs/method.md``, "The embedded judge"). Its weights are set by construction
(:mod:`rlkd_fast.demo.checklist_judge`); this command builds it from nothing but the synthetic
generator, the trainer and the executor, in three stages:

1. **vocabulary**: a word-level tokenizer over the judge prompts of gold programs of the
   judge's own questions (the synthetic ``train`` split, a seed no run uses), and the numbers
   those gold programs type without their question stating them;
2. **construction**: the three-layer checklist judge for that tokenizer;
3. **check**: the paper's Table 3 protocol on held-out ``test`` questions with a fresh warm-up
   student (``check_seed``): pairwise accuracy of the Yes/No score, beside the judge's own
   log-likelihood (LL) baseline.

The judge directory gets the weights (safetensors), the tokenizer, the check's pairs
(``check_pairs.jsonl``) and ``build.json``: the command, settings, data sizes, wall times, the
check's figures and each file's SHA-256, which
:func:`rlkd_fast.demo.judge_artifact.embedded_judge_dir` verifies before every use. The
weights depend on the settings only: a rebuild writes the same ``model.safetensors``.
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
from transformers import PreTrainedTokenizerFast

from rlkd_fast import atomic
from rlkd_fast.checkpoint import latest_checkpoint, save_model
from rlkd_fast.config import TrainConfig, load_config
from rlkd_fast.data import load_split
from rlkd_fast.demo.checklist_judge import checklist_judge, checklist_tokenizer, unstated_constants
from rlkd_fast.demo.judge_artifact import BUILD_RECORD, EMBEDDED_JUDGE_DIR
from rlkd_fast.executor import PotExecutor
from rlkd_fast.judge_quality import Pair, collect_pairs, pairwise_accuracy
from rlkd_fast.judges import LogLikelihoodScorer, YoNJudge
from rlkd_fast.models import load_causal_lm
from rlkd_fast.prompts import judge_prompt

# The judge's own questions (its vocabulary) are drawn with this seed, which no run uses.
# The check's pairs are kept beside the judge, so its test re-measures it on the same programs.
CHECK_PAIRS = "check_pairs.jsonl"
JUDGE_DATA_SEED = 777


@dataclass(frozen=True)
class BuildSettings:
    """What a build does; :meth:`small` is the end-to-end test's size."""

    dataset: str = "synthetic:2"
    vocab_problems: int = 4000  # gold programs whose prompts make the vocabulary
    vocab_seed: int = JUDGE_DATA_SEED  # the seed they are drawn with
    check_seed: int = 102
    check_pairs: int = 200
    check_questions: int = 1000  # held-out questions looked at, at most, to find the pairs
    student_overrides: tuple[str, ...] = ()  # extra TrainConfig key=value for the student

    @classmethod
    def small(cls) -> BuildSettings:
        return cls(dataset="synthetic:1", vocab_problems=16, check_pairs=2, check_questions=8,
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


def check_judge(judge_dir: Path, settings: BuildSettings, workdir: Path, executor,
                progress: bool) -> tuple[dict, list[Pair]]:
    """The paper's Table 3 protocol on held-out test questions with a fresh warm-up student:
    the figures and the pairs they were measured on."""
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
    figures = {"collection": stats, "yon": pairwise_accuracy(yon, pairs),
               "ll": pairwise_accuracy(ll, pairs)}
    return figures, pairs


def vocabulary(settings: BuildSettings) -> tuple[PreTrainedTokenizerFast, set[str]]:
    """The judge's tokenizer and the unstated constants, from gold programs of its questions."""
    gold = load_split(settings.dataset, split="train", seed=settings.vocab_seed,
                      size=settings.vocab_problems)
    tok = checklist_tokenizer(judge_prompt(p.question, p.program) for p in gold)
    return tok, unstated_constants((p.question, p.program) for p in gold)


def build(out: Path, settings: BuildSettings, progress: bool = True,
          command: str = "") -> dict:
    """Build the judge into ``out`` (written atomically) and return its build record."""
    t0, wall = time.time(), {}
    tok, constants = vocabulary(settings)
    wall["vocabulary"] = time.time() - t0
    model = checklist_judge(tok, constants)
    wall["construction"] = time.time() - t0 - wall["vocabulary"]
    with tempfile.TemporaryDirectory(prefix="rlkd-judge-build-") as work, \
            PotExecutor(workers=2, timeout_s=2.0, conventions="reft") as executor:
        workdir = Path(work)
        draft = workdir / "judge"
        save_model(model, tok, draft)
        check, pairs = check_judge(draft, settings, workdir, executor, progress)
        wall["check"] = time.time() - t0 - sum(wall.values())
        record = {
            "command": command, "settings": dataclasses.asdict(settings),
            "data": {"vocab_problems": settings.vocab_problems, "vocab": len(tok),
                     "unstated_constants": sorted(constants, key=int)},
            "check": check, "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
            "versions": {"torch": torch.__version__},
        }

        def write(tmp: Path) -> None:
            save_model(model, tok, tmp)
            with open(tmp / CHECK_PAIRS, "w") as f:
                for pair in pairs:
                    f.write(json.dumps({"question": pair.problem.question,
                                        "answer": pair.problem.answer,
                                        "correct": pair.correct,
                                        "incorrect": pair.incorrect}) + "\n")
            record["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                               for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")

        atomic.write_dir(out, write, replace=True)
    return record


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m rlkd_fast.demo.build_judge",
                                description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--out", default=str(EMBEDDED_JUDGE_DIR),
                   help="where to write the judge (default: the package's embedded judge, which "
                        "every default run then uses; a full build takes about 20 minutes on "
                        "2 CPU cores, nearly all of it the check)")
    p.add_argument("--small", action="store_true", help="a tiny build (seconds), for tests")
    p.add_argument("--cache-dir", default=None,
                   help="where the students' tiny tokenizer and model are cached (default: the "
                        "trainer's cache_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    settings = BuildSettings.small() if args.small else BuildSettings()
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
