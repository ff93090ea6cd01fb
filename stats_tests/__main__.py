"""``python -m stats_tests LOG``: the four App. B tests on a rollout log, per step.

Prints one row per step (checkpoint) shaped like VIP Tables 5-8: the global p-values of
Fisher (B.1), Edgington (B.2), Levene (B.3) and O'Brien (B.4), with the number of
questions each test used and excluded, and the decision at --alpha. ``--json OUT`` writes the
results there too; OUT is checked before the log is read (write_guard: never the log itself,
never a run's records, an existing file only with --overwrite, which moves it aside). Exit
status 0, or 2 for a bad argument, an unreadable log or an OUT that must not be written. A
rejection is a finding, not an error.
"""

from __future__ import annotations

import argparse
import json
import sys

import write_guard
from stats_tests import edgington_correlation_test, fisher_correlation_test, levene_test, obrien_test
from stats_tests.rollout_log import groups_by_step, read_rollout_log


def run_step(rewards, norms) -> dict:
    """The four tests on one step's groups; a test that cannot run reports why."""
    out = {}
    tests = {
        "fisher": lambda: fisher_correlation_test(rewards, norms),
        "edgington": lambda: edgington_correlation_test(rewards, norms),
        "levene": lambda: levene_test(norms),
        "obrien": lambda: obrien_test(norms),
    }
    for name, run in tests.items():
        try:
            res = run()
        except ValueError as exc:
            out[name] = {"error": str(exc)}
            continue
        out[name] = {
            "statistic": res.statistic,
            "pvalue": res.pvalue,
            "groups": res.n_groups,
            "excluded": res.excluded.total,
        }
    return out


def format_rows(results: dict, alpha: float) -> str:
    """One row per step: each test's global p-value (* when < alpha), questions used, excluded."""
    names = ("fisher", "edgington", "levene", "obrien")
    header = f"{'step':>6} " + " ".join(f"{name + ' p':>13} {'Q':>4} {'excl':>4}" for name in names)
    lines = [header, "-" * len(header)]
    for step, tests in results.items():
        cells = []
        for name in names:
            t = tests[name]
            if "error" in t:
                cells.append(f"{'n/a':>13} {'':>4} {'':>4}")
            else:
                mark = "*" if t["pvalue"] < alpha else " "
                cells.append(f"{t['pvalue']:>12.4g}{mark} {t['groups']:>4} {t['excluded']:>4}")
        lines.append(f"{step:>6} " + " ".join(cells))
    lines.append(
        f"* p < alpha = {alpha:g}: H0 rejected (B.1/B.2: Corr(R, Z) = 0 in every question; B.3/B.4: equal Var(Z))."
    )
    errors = [f"step {s} {n}: {t['error']}" for s, tests in results.items() for n, t in tests.items() if "error" in t]
    return "\n".join(lines + errors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stats_tests", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log", metavar="LOG", help="rollout log (JSON Lines, or Parquet with pandas installed)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT (moved aside first)")
    args = parser.parse_args(argv)
    if not 0.0 < args.alpha < 1.0:
        parser.error(f"--alpha must lie in (0, 1); got {args.alpha}")
    try:
        if args.json:
            write_guard.check_file(args.json, "--json", inputs=[args.log], overwrite=args.overwrite)
        steps = groups_by_step(read_rollout_log(args.log))
    except ValueError as exc:
        print(f"python -m stats_tests: error: {exc}", file=sys.stderr)
        return 2
    results = {step: run_step(rewards, norms) for step, (rewards, norms) in steps.items()}
    print(format_rows(results, args.alpha))
    if args.json:
        record = {"alpha": args.alpha, "steps": {str(s): r for s, r in results.items()}}
        try:
            previous = write_guard.write_file(args.json, json.dumps(record, indent=1))
        except OSError as exc:  # e.g. a full disk; the results are on stdout
            print(f"python -m stats_tests: error: --json {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if previous is not None:
            print(f"the previous {args.json} was moved to {previous}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
