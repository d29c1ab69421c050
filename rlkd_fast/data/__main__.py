"""``python -m rlkd_fast.data NAME``: load one split of a data set, report its size and skipped
rows, show a few problems, optionally write it as ReFT-style JSON lines."""

from __future__ import annotations

import argparse
import json

from rlkd_fast.data.problem import to_records
from rlkd_fast.data.registry import load_split


def main(argv: list[str] | None = None) -> None:
    """``python -m rlkd_fast.data NAME [--split S] [--out FILE.jsonl]``: load a split, report
    its size and skipped rows, show a few problems, optionally write it as JSON lines."""
    ap = argparse.ArgumentParser(prog="python -m rlkd_fast.data", description=main.__doc__)
    ap.add_argument("name", help="data set name, e.g. gsm8k, gsm_symbolic:p1, synthetic:2")
    ap.add_argument("--source", help="hub id or local file/directory (default: the hub id)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, help="synthetic: number of problems")
    ap.add_argument("--show", type=int, default=2, help="problems to print")
    ap.add_argument("--out", help="write the split as ReFT-style JSON lines here")
    args = ap.parse_args(argv)
    try:
        problems = load_split(args.name, args.source, args.split, args.fraction, args.seed,
                              size=args.size, source_option="--source PATH")
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        ap.exit(1, f"{ap.prog}: error: {message}\n")
    counts = f"{len(problems)} problems, {problems.skipped} skipped, {problems.dropped} dropped"
    print(f"{args.name}/{args.split}: {counts}")
    for p in problems[: args.show]:
        print(f"\n[{p.id}] answer={p.answer}\n{p.program or p.question}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in to_records(problems))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
