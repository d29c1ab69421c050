"""Judge quality, the paper's Table 3 protocol.

Sample programs from the student for each question, execute them, keep one correct and one
incorrect program per question (until ``n`` questions have both), and count a judge right on a
question when it scores the correct program strictly higher than the incorrect one. Judges:
YoN (the LLM judge's Yes/No reward, thresholding off so scores stay comparable), LL (the same
model's mean token log-likelihood of the program) and, if given, the reranker.

    python -m rlkd_fast.judge_quality --student PATH --judge PATH --dataset gsm8k --n 200 \\
        [--reranker PATH] [--samples 8] [--out judge_quality.json] [--prompt-style reft|header]

For the offline default (its warm-up student and the embedded judge, ``--judge tiny``):

    python -m rlkd_fast.judge_quality --student runs/default/ckpt-0000000/policy --judge tiny \\
        --dataset synthetic:2 --n 200 --temperature 0.7

The student is prompted as it was trained when its directory records how
(``prompt_settings.json``, written with every checkpoint), else with ReFT's prompt; the
``--prompt-style``, ``--anti-hacking`` and token-limit flags override either.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlkd_fast.data import Problem, load_split
from rlkd_fast.evaluate import (
    add_prompting_flags,
    prompting_args,
    resolve_prompting,
    sample_programs,
)
from rlkd_fast.hub import missing_local_path
from rlkd_fast.judges import Judge
from rlkd_fast.rewards import prediction


@dataclass(frozen=True)
class Pair:
    """One question with a correct and an incorrect program sampled from the student."""

    problem: Problem
    correct: str
    incorrect: str


def pick_pair(problem: Problem, programs: Sequence[str], preds: Sequence[float | None],
              tol: float = 1e-2) -> Pair | None:
    """The first correct program and the first incorrect one, or None if either is missing.

    An incorrect program that ran to a wrong number is preferred over one that failed: a
    crash is easy to spot, a wrong number is the case a judge is for."""
    correct = wrong = failed = None
    for prog, v in zip(programs, preds):
        if v is not None and abs(v - problem.answer) <= tol:
            correct = prog if correct is None else correct
        elif v is not None:
            wrong = prog if wrong is None else wrong
        else:
            failed = prog if failed is None else failed
    incorrect = failed if wrong is None else wrong
    return None if correct is None or incorrect is None else Pair(problem, correct, incorrect)


def collect_pairs(
    model,
    tokenizer,
    problems: Sequence[Problem],
    executor,
    n: int = 200,
    samples: int = 8,
    chunk: int = 64,
    tol: float = 1e-2,
    mode: str = "strict",
    progress: bool = False,
    **generate_kwargs,
) -> tuple[list[Pair], dict]:
    """Sample ``samples`` programs per question (in chunks of questions, in order) until ``n``
    questions have a correct and an incorrect program.

    Returns the pairs and ``{"questions_seen", "pairs", "all_correct", "none_correct"}``.
    """
    if samples < 2:
        raise ValueError("need at least 2 samples per question to find a pair")
    labelled = [p for p in problems if p.answer is not None]
    pairs: list[Pair] = []
    seen = all_correct = none_correct = 0
    bar = tqdm(total=n, desc="pairs", disable=not progress)
    for start in range(0, len(labelled), chunk):
        if len(pairs) >= n:
            break
        batch = labelled[start:start + chunk]
        programs = sample_programs(model, tokenizer, batch, samples, True, **generate_kwargs)
        preds = [prediction(r, mode) for r in executor.run(programs)]
        for i, problem in enumerate(batch):
            if len(pairs) >= n:
                break
            seen += 1
            rows = slice(i * samples, (i + 1) * samples)
            pair = pick_pair(problem, programs[rows], preds[rows], tol)
            if pair is not None:
                pairs.append(pair)
                bar.update(1)
            elif any(v is not None and abs(v - problem.answer) <= tol for v in preds[rows]):
                all_correct += 1
            else:
                none_correct += 1
    bar.close()
    return pairs, {"questions_seen": seen, "pairs": len(pairs), "all_correct": all_correct,
                   "none_correct": none_correct}


def pairwise_accuracy(judge: Judge, pairs: Sequence[Pair]) -> dict:
    """Share of pairs where ``judge`` scores the correct program strictly higher (ties are
    wrong, and counted). Both programs of all pairs are scored in one call."""
    if not pairs:
        return {"accuracy": None, "ties": 0, "n": 0}
    questions = [p.problem for p in pairs] * 2
    programs = [p.correct for p in pairs] + [p.incorrect for p in pairs]
    scores = judge.score(questions, programs).reward
    good, bad = scores[:len(pairs)], scores[len(pairs):]
    return {"accuracy": (good > bad).float().mean().item(), "ties": int((good == bad).sum()),
            "n": len(pairs), "mean_correct": good.mean().item(),
            "mean_incorrect": bad.mean().item()}


def judge_quality(
    student,
    tokenizer,
    problems: Sequence[Problem],
    judges: Mapping[str, Judge],
    executor,
    n: int = 200,
    samples: int = 8,
    progress: bool = False,
    **generate_kwargs,
) -> dict:
    """Collect pairs from the student, then each judge's pairwise accuracy (Table 3)."""
    pairs, stats = collect_pairs(student, tokenizer, problems, executor, n=n, samples=samples,
                                 progress=progress, **generate_kwargs)
    return {"collection": stats,
            "judges": {name: pairwise_accuracy(j, pairs) for name, j in judges.items()}}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlkd_fast.judge_quality",
                                description="Pairwise judge accuracy (the paper's Table 3).")
    p.add_argument("--student", required=True, help="the SFT student (hub id or directory)")
    p.add_argument("--judge", required=True,
                   help="the LLM judge (hub id or directory; tiny: the embedded judge)")
    p.add_argument("--reranker", default=None, help="a 2-label sequence classifier")
    p.add_argument("--dataset", default="gsm8k")
    p.add_argument("--source", default=None, help="local file/dir or hub id of the data set")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=200, help="questions with a pair")
    p.add_argument("--limit", type=int, default=None, help="look at most at K questions")
    p.add_argument("--samples", type=int, default=8, help="student samples per question")
    add_prompting_flags(p)
    p.add_argument("--batch-size", type=int, default=32, help="student rows per generate call")
    p.add_argument("--judge-batch-size", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default=None, help="student device")
    p.add_argument("--judge-device", default=None, help="judge device (default: --device)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (the weight loading's included)")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    from rlkd_fast.executor import PotExecutor
    from rlkd_fast.judges import LogLikelihoodScorer, RerankJudge, YoNJudge
    from rlkd_fast.models import load_causal_lm
    from rlkd_fast.run_inputs import resolve_judge

    args.judge = resolve_judge(args.judge)
    models = {"--student": args.student, "--judge": args.judge, "--reranker": args.reranker}
    missing = [missing_local_path(v, k) for k, v in models.items() if v]
    try:
        if any(missing):
            raise ValueError("\n  ".join(m for m in missing if m))
        prompting, note = resolve_prompting(args.student, **prompting_args(args))
    except ValueError as err:
        parser.error(str(err))
    print(note, file=sys.stderr)
    if args.no_progress:
        hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    judge_device = args.judge_device or args.device
    student, tokenizer = load_causal_lm(args.student, device=args.device)
    problems = load_split(args.dataset, source=args.source, split=args.split,
                          source_option="--source PATH")[:args.limit]
    # delta=0: thresholding would tie every pair below it at 0.
    yon = YoNJudge.from_pretrained(args.judge, device=judge_device, delta=0.0,
                                   batch_size=args.judge_batch_size)
    judges: dict[str, Judge] = {
        "yon": yon,
        "ll": LogLikelihoodScorer(yon.model, yon.tokenizer, batch_size=args.judge_batch_size),
    }
    if args.reranker:
        judges["rerank"] = RerankJudge.from_pretrained(args.reranker, device=judge_device,
                                                       batch_size=args.judge_batch_size)
    with PotExecutor(workers=args.workers, timeout_s=args.timeout, conventions="reft") as ex:
        result = judge_quality(student, tokenizer, problems, judges, ex, n=args.n,
                               samples=args.samples, progress=not args.no_progress,
                               max_new_tokens=prompting["max_new_tokens"],
                               batch_size=args.batch_size, temperature=args.temperature,
                               prompt_style=prompting["prompt_style"],
                               anti_hacking=prompting["anti_hacking"],
                               max_prompt_length=prompting["max_prompt_tokens"])
    stats = result["collection"]
    print(f"{args.dataset}: {stats['pairs']} pairs from {stats['questions_seen']} questions")
    for name, r in result["judges"].items():
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
        print(f"  {name:<8} accuracy {acc:>6} %   ties {r['ties']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"student": args.student, "judge": args.judge,
                                              "dataset": args.dataset, "prompting": prompting,
                                              **result}, indent=2))
        print(f"results written to {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
