"""``python -m rl_study [COMPARISON ...]`` (or ``rlvr-study``): run the study, print its tables and
write one ledger record per comparison (see the package docstring)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import rl_study
import write_guard
from rl_study.comparisons import COMPARISONS, WARMUP_STEPS, problem_set
from rl_study.runs import run_study, warm_start
from rl_study.summary import markdown_table, summarise
from simulators.ledger import format_table, write_record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_study", description=rl_study.__doc__.split("\n\n")[0])
    parser.add_argument(
        "comparisons", nargs="*", metavar="COMPARISON", help=f"any of {', '.join(COMPARISONS)} (default: all)"
    )
    parser.add_argument(
        "--methods", nargs="+", metavar="METHOD", help="run only these methods of each comparison, and its baseline"
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="records")
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS)
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per core)"
    )
    args = parser.parse_args(argv)
    unknown = [c for c in args.comparisons if c not in COMPARISONS]
    if unknown:
        parser.error(f"COMPARISON must be one of {', '.join(COMPARISONS)}; got {', '.join(unknown)}")
    args.comparisons = args.comparisons or list(COMPARISONS)
    known = {m for c in args.comparisons for m in COMPARISONS[c]["methods"]}
    if args.methods and not set(args.methods) <= known:
        missing = ", ".join(sorted(set(args.methods) - known))
        parser.error(
            f"--methods must name methods of {', '.join(args.comparisons)} ({', '.join(sorted(known))}); got {missing}"
        )
    if args.seeds < 2:
        parser.error(f"--seeds must be >= 2 (the intervals and paired tests are over seeds); got {args.seeds}")
    for name in ("steps", "warmup_steps", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    try:  # before any worker starts: its cache and records go there
        write_guard.check_records_folder(args.out, "--out")
    except write_guard.OutputError as exc:
        parser.error(str(exc))
    out = Path(args.out) / "rl_study"
    runs = run_study(args.comparisons, args.seeds, args.steps, out, args.warmup_steps, args.jobs, args.methods)
    config = {"seeds": args.seeds, "steps": args.steps, "warmup_steps": args.warmup_steps, "methods": args.methods}
    for comparison, comparison_runs in runs.items():
        starts = {s: warm_start(s, problem_set(comparison), out, args.warmup_steps) for s in range(args.seeds)}
        rows = summarise(comparison, comparison_runs, starts)
        print(format_table(rows))
        print(markdown_table(rows))
        check = {
            "name": f"rl_study_{comparison}",
            "claims": [COMPARISONS[comparison]["claim"]],
            "seconds": sum(r["seconds"] for r in comparison_runs),
            "results": [r.to_json() for r in rows],
        }
        print(write_record(Path(args.out), f"rl_study_{comparison}", config, 0, [check]))
    return 0
