"""Evaluation: greedy and majority-vote accuracy of a PoT student on math benchmarks.

The student writes ``solution()`` bodies after ReFT's primed prompt (or, with
``prompt_style="header"``, after the primed header alone); each program is cut at its
first blank line and run in the sandboxed :class:`~rlkd_fast.executor.PotExecutor`; an answer is
correct when it is within ``tol`` (1e-2) of the gold one. Majority voting samples ``vote``
programs per question and votes over the numbers they return (programs that fail do not vote;
ties go to the answer seen first).

Library: :func:`evaluate` (the trainer calls it for periodic evaluation). Command line::

    python -m rlkd_fast.evaluate --model PATH --datasets gsm8k,svamp,gsm_symbolic:main,p1,p2 \\
        [--vote N] [--limit K] [--source gsm8k=path/to/test.jsonl] [--out results.json] \\
        [--prompt-style reft|header]

A checkpoint the trainer wrote records how its policy was prompted (``prompt_settings.json``:
prompt style, anti-hacking suffix, token limits); the command line prompts it that way unless a
flag says otherwise, and assumes ReFT's prompt for models without the file.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from rlkd_fast.data import DATASETS, Problem, load_split
from rlkd_fast.hub import missing_local_path
from rlkd_fast.prompts import (
    PROMPT_SETTINGS_FILE,
    PROMPT_STYLES,
    count_program_lines,
    load_prompt_settings,
    program_from_completion,
    program_header,
    student_prompt,
)
from rlkd_fast.rewards import prediction
from rlkd_fast.rollout import generate

#: Paper's anti-hacking threshold: responses under this many lines are reported as "short".
SHORT_LINES = 4


def majority_vote(values: Sequence[float | None], digits: int | None = 6) -> float | None:
    """The most frequent number among ``values`` (None entries do not vote); ties go to the
    value seen first. Numbers equal after rounding to ``digits`` decimals vote together, so
    ``0.1 + 0.2`` and ``0.3`` agree (``digits=None``: exact values, as ReFT's Counter)."""
    counts: dict[float, int] = {}
    first: dict[float, float] = {}
    for v in values:
        if v is None:
            continue
        key = v if digits is None else round(v, digits)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, v)
    if not counts:
        return None
    return first[max(counts, key=counts.get)]  # max keeps the first of equal counts


def student_prompts(problems: Sequence[Problem], anti_hacking: bool = False,
                    prompt_style: str = "reft") -> list[str]:
    """The student's prompts (ReFT's by default), primed with the program header."""
    return [student_prompt(p.question, prompt_style, anti_hacking) for p in problems]


def completions_to_programs(
    texts: Sequence[str], problems: Sequence[Problem], num_samples: int = 1,
    anti_hacking: bool = False,
) -> list[str]:
    """Whole programs (header + generated body, cut at the first blank line) for rows laid out
    as :func:`rlkd_fast.rollout.generate` returns them (``num_samples`` rows per problem)."""
    if len(texts) != len(problems) * num_samples:
        raise ValueError(f"{len(texts)} completions for {len(problems)} problems x {num_samples}")
    return [
        program_from_completion(t, primer=program_header(problems[i // num_samples].question,
                                                         anti_hacking))
        for i, t in enumerate(texts)
    ]


def _run_async(executor, programs: list[str]) -> concurrent.futures.Future:
    """``executor.submit`` where the executor has it (runs in its processes meanwhile), else
    ``executor.run`` now."""
    if hasattr(executor, "submit"):
        return executor.submit(programs)
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(executor.run(programs))
    return future


def _correct(pred: float | None, gold: float, tol: float) -> bool:
    return pred is not None and abs(pred - gold) <= tol


def sample_programs(
    model, tokenizer, problems: Sequence[Problem], num_samples: int, do_sample: bool,
    anti_hacking: bool = False, prompt_style: str = "reft", **generate_kwargs,
) -> list[str]:
    """Generate and cut ``num_samples`` programs per problem (consecutive rows)."""
    roll = generate(model, tokenizer, student_prompts(problems, anti_hacking, prompt_style),
                    num_samples=num_samples, do_sample=do_sample, **generate_kwargs)
    return completions_to_programs(roll.texts, problems, num_samples, anti_hacking)


def evaluate(
    model,
    tokenizer,
    problems: Sequence[Problem],
    vote: int = 0,
    executor=None,
    batch_size: int = 32,
    max_new_tokens: int = 300,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    tol: float = 1e-2,
    mode: str = "strict",
    anti_hacking: bool = False,
    prompt_style: str = "reft",
    progress: bool = False,
    return_records: bool = False,
    chunk: int = 256,
    **generate_kwargs,
) -> dict:
    """Greedy (and, with ``vote > 0``, majority-vote) accuracy of ``model`` on ``problems``.

    Args:
        model, tokenizer: the student (HF causal LM); restored to its training mode after.
        problems: labelled problems (``answer`` not None).
        vote: samples per problem for majority voting (0: greedy only; the paper uses 100).
        executor: a :class:`~rlkd_fast.executor.PotExecutor` (one with ReFT conventions is
            opened and closed here when None).
        batch_size, max_new_tokens, temperature, top_k, top_p: generation settings (sampling
            settings apply to the vote samples).
        tol: absolute tolerance of a correct answer. mode: ``"strict"`` or ``"reft"``, what
            counts as a returned number (see :func:`rlkd_fast.rewards.prediction`).
        anti_hacking: prompt with the anti-hacking docstring suffix.
        prompt_style: ``"reft"`` or ``"header"`` (see :data:`rlkd_fast.prompts.PROMPT_STYLES`);
            use the style the student was trained with.
        progress: a progress bar over the programs generated (updated after each batch).
        return_records: add per-problem ``records`` (program, prediction, correctness).
        chunk: problems generated at a time (their programs run while the next chunk
            generates).
        **generate_kwargs: passed to :func:`rlkd_fast.rollout.generate`.

    Returns:
        ``{"n", "greedy_acc", "greedy_correct", "executed", "short_share", "seconds"}`` plus
        ``{"vote", "vote_acc", "vote_correct"}`` when voting; accuracies are fractions in [0, 1].
    """
    if not problems:
        raise ValueError("no problems to evaluate")
    unlabeled = [p.id for p in problems if p.answer is None]
    if unlabeled:
        raise ValueError(f"{len(unlabeled)} problems have no gold answer (first: {unlabeled[0]})")
    own = executor is None
    if own:
        from rlkd_fast.executor import PotExecutor

        executor = PotExecutor(workers=2, timeout_s=10.0, conventions="reft")
    start = time.time()
    gen = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, anti_hacking=anti_hacking,
               prompt_style=prompt_style, **generate_kwargs)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    programs: list[str] = []
    greedy_runs, vote_runs = [], []
    try:
        # Chunks bound the memory of N x vote rollouts; each chunk's programs execute in the
        # executor's processes while the next chunk generates. The bar counts the programs
        # generated (one per problem, plus `vote` with voting), batch by batch.
        bar = tqdm(total=len(problems) * (1 + vote), desc="evaluate", unit="program",
                   disable=not progress)
        gen["on_batch"] = bar.update
        for lo in range(0, len(problems), chunk):
            part = problems[lo:lo + chunk]
            greedy_programs = sample_programs(model, tokenizer, part, 1, False, **gen)
            programs += greedy_programs
            greedy_runs.append(_run_async(executor, greedy_programs))
            if vote > 0:
                sampled = sample_programs(model, tokenizer, part, vote, True, **sampling, **gen)
                vote_runs.append(_run_async(executor, sampled))
        bar.close()
        preds = [prediction(r, mode) for f in greedy_runs for r in f.result()]
        sampled_preds = [prediction(r, mode) for f in vote_runs for r in f.result()]
    finally:
        if own:
            executor.close()
    greedy = [_correct(v, p.answer, tol) for v, p in zip(preds, problems)]
    out = {
        "n": len(problems),
        "greedy_acc": sum(greedy) / len(problems),
        "greedy_correct": sum(greedy),
        "executed": sum(v is not None for v in preds),
        "short_share": sum(count_program_lines(p) < SHORT_LINES for p in programs)
        / len(problems),
    }
    if vote > 0:
        winners = [majority_vote(sampled_preds[i * vote:(i + 1) * vote])
                   for i in range(len(problems))]
        voted = [_correct(w, p.answer, tol) for w, p in zip(winners, problems)]
        out.update(vote=vote, vote_acc=sum(voted) / len(problems), vote_correct=sum(voted))
    out["seconds"] = time.time() - start
    if return_records:
        out["records"] = [
            {"id": p.id, "answer": p.answer, "program": prog, "prediction": v, "correct": c}
            for p, prog, v, c in zip(problems, programs, preds, greedy)
        ]
        if vote > 0:
            for rec, w, c in zip(out["records"], winners, voted):
                rec.update(vote_prediction=w, vote_correct=c)
    return out


# ----------------------------------------------------------------------------- command line


def parse_datasets(spec: str) -> list[str]:
    """``"gsm8k,gsm_symbolic:main,p1,p2"`` -> ``["gsm8k", "gsm_symbolic:main",
    "gsm_symbolic:p1", "gsm_symbolic:p2"]``: a bare name that is not a data set continues the
    configs of the last ``name:config`` item."""
    known = set(DATASETS)
    names, base = [], None
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if ":" in item:
            base = item.split(":", 1)[0]
            names.append(item)
        elif item in known or base is None:
            base = None
            names.append(item)
        else:
            names.append(f"{base}:{item}")
    if not names:
        raise ValueError("no data sets given")
    return names


def parse_sources(items: Sequence[str]) -> dict[str, str]:
    """``["gsm8k=path", ...]`` -> ``{"gsm8k": "path"}``."""
    sources = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--source wants name=path, got {item!r}")
        sources[name.strip()] = path.strip()
    return sources


def format_table(rows: dict[str, dict]) -> str:
    """A plain-text table of the results per data set (accuracies in percent)."""
    vote = any("vote_acc" in r for r in rows.values())
    head = ["dataset", "n", "greedy %", "executed %", "short %"] + (["vote %"] if vote else [])
    lines = []
    for name, r in rows.items():
        line = [name, str(r["n"]), f"{100 * r['greedy_acc']:.2f}",
                f"{100 * r['executed'] / r['n']:.1f}", f"{100 * r['short_share']:.1f}"]
        if vote:
            line.append(f"{100 * r['vote_acc']:.2f}" if "vote_acc" in r else "-")
        lines.append(line)
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, lines)])


#: How a model without a prompt settings file is prompted (the paper's students: ReFT's prompt).
DEFAULT_PROMPTING = {"prompt_style": "reft", "anti_hacking": False, "max_prompt_tokens": None,
                     "max_new_tokens": 300}


def resolve_prompting(model: str | Path, **given) -> tuple[dict, str]:
    """How to prompt ``model``: each setting of ``given`` that is not None (a command-line flag),
    else what the model recorded in training (:data:`~rlkd_fast.prompts.PROMPT_SETTINGS_FILE`
    beside its weights), else :data:`DEFAULT_PROMPTING`. Returns the settings and a line saying
    where they came from."""
    recorded = load_prompt_settings(model) if Path(model).expanduser().is_dir() else None
    settings = {}
    for key, default in DEFAULT_PROMPTING.items():
        if given.get(key) is not None:
            settings[key] = given[key]
        elif recorded is not None and key in recorded:
            settings[key] = recorded[key]
        else:
            settings[key] = default
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    if recorded is None:
        note = (f"{model} records no prompt settings ({PROMPT_SETTINGS_FILE}): prompting with "
                f"{shown}; pass --prompt-style etc. if it was trained otherwise")
    else:
        overridden = [k for k in settings if given.get(k) is not None]
        note = (f"prompting as {model} was trained ({PROMPT_SETTINGS_FILE}): {shown}"
                + (f" (from the command line: {', '.join(overridden)})" if overridden else ""))
    return settings, note


def add_prompting_flags(p: argparse.ArgumentParser) -> None:
    """The flags that override a model's recorded prompt settings (evaluate, judge_quality)."""
    p.add_argument("--prompt-style", choices=PROMPT_STYLES, default=None,
                   help="the prompt the student was trained with (default: the one it recorded "
                        f"in {PROMPT_SETTINGS_FILE}, else reft)")
    p.add_argument("--anti-hacking", action=argparse.BooleanOptionalAction, default=None,
                   help="the anti-hacking docstring suffix (default: as recorded, else off)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per program at most (default: as recorded, else 300)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="keep the last this-many prompt tokens (default: as recorded, else all)")


def prompting_args(args: argparse.Namespace) -> dict:
    return {"prompt_style": args.prompt_style, "anti_hacking": args.anti_hacking,
            "max_new_tokens": args.max_new_tokens, "max_prompt_tokens": args.max_prompt_tokens}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rlkd_fast.evaluate",
        description="Greedy and majority-vote accuracy of a PoT student on math benchmarks. "
                    "A checkpoint written by the trainer is prompted as it was trained.")
    p.add_argument("--model", required=True, help="hub id or local checkpoint directory")
    p.add_argument("--datasets", default="gsm8k",
                   help="comma list, e.g. gsm8k,svamp,gsm_plus,gsm_symbolic:main,p1,p2")
    p.add_argument("--split", default="test")
    p.add_argument("--source", action="append", default=[], metavar="NAME=PATH",
                   help="local file/dir or hub id for a data set (repeatable)")
    p.add_argument("--vote", type=int, default=0, help="samples per question for majority vote")
    p.add_argument("--limit", type=int, default=None, help="first K problems per data set")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--mode", choices=("strict", "reft"), default="strict")
    add_prompting_flags(p)
    p.add_argument("--workers", type=int, default=2, help="executor processes")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per program")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (the weight loading's included)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    parser = _parser()
    args = parser.parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    from rlkd_fast.executor import PotExecutor
    from rlkd_fast.models import load_causal_lm

    try:
        names, sources = parse_datasets(args.datasets), parse_sources(args.source)
        prompting, note = resolve_prompting(args.model, **prompting_args(args))
    except ValueError as err:
        parser.error(str(err))
    missing = missing_local_path(args.model, "--model")
    if missing:
        parser.error(missing)
    data = {}  # every data set is read before the model loads: a bad one fails at once
    for name in names:
        source = sources.get(name, sources.get(name.split(":", 1)[0]))
        try:
            problems = load_split(name, source=source, split=args.split,
                                  source_option=f"--source {name}=PATH")
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            parser.exit(1, f"{parser.prog}: error: {name}: {err}\n")
        data[name] = problems[:args.limit] if args.limit is not None else problems
    print(note, file=sys.stderr)
    if args.no_progress:
        hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    model, tokenizer = load_causal_lm(args.model, device=args.device)
    results: dict[str, dict] = {}
    with PotExecutor(workers=args.workers, timeout_s=args.timeout, conventions="reft") as ex:
        for name, problems in data.items():
            print(f"{name}: {len(problems)} problems", file=sys.stderr)
            results[name] = evaluate(
                model, tokenizer, problems, vote=args.vote, executor=ex,
                batch_size=args.batch_size, max_new_tokens=prompting["max_new_tokens"],
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                mode=args.mode, anti_hacking=prompting["anti_hacking"],
                prompt_style=prompting["prompt_style"],
                max_prompt_length=prompting["max_prompt_tokens"],
                progress=not args.no_progress,
            )
    print(format_table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(
            {"model": str(args.model), "split": args.split, "prompting": prompting,
             "results": results}, indent=2))
        print(f"results written to {args.out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
