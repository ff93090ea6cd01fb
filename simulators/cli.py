"""The claims runner: ``python -m simulators`` and ``python -m simulators.<topic>``."""

from __future__ import annotations

import argparse
import sys
import time

import write_guard
from simulators import ledger, registry


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the registered claim checks, print the verdict table and write a JSON record.",
    )
    parser.add_argument("--full", action="store_true", help="long version: larger grids and more draws")
    parser.add_argument("--only", default="", help="comma-separated claim ids, e.g. V1,V2")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--out", default="records", help="directory for the JSON record (default records/)")
    parser.add_argument("--list", action="store_true", help="list the registered checks and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv=None, topics=registry.TOPICS, prog: str = "python -m simulators") -> int:
    """Run the checks of ``topics``; return the process exit status.

    0: every claim held and every negative control was rejected;
    1: a claim failed or a control was not rejected; 2: bad arguments.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    pairs = registry.checks_for(topics)
    if args.list:
        for topic, check in pairs:
            print(f"{','.join(check.claims):<12} {topic}.{check.name}: {check.description}")
        return 0
    if args.seed < 0:  # numpy/random/bit_generator.pyx:69 (_int_to_uint32_array) raises mid-run on it
        parser.error(f"--seed must be an integer >= 0 (numpy's SeedSequence takes no negative seed); got {args.seed}")
    try:  # before the checks run, so that a bad --out does not cost a run
        write_guard.check_records_folder(args.out, "--out")
    except write_guard.OutputError as exc:
        parser.error(str(exc))
    wanted = {c.strip() for c in args.only.split(",") if c.strip()}
    known = {claim for _, check in pairs for claim in check.claims}
    unknown = wanted - known
    if unknown:
        parser.error(f"--only: unknown claim id(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    selected = [(t, c) for t, c in pairs if not wanted or wanted & set(c.claims)]

    config = registry.RunConfig(full=args.full, progress=not args.no_progress)
    results, check_records = [], []
    for topic, check in selected:
        print(f"[{topic}.{check.name}] {check.description}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rows = check.run(config, registry.check_rng(args.seed, check.name))
        seconds = time.perf_counter() - start
        rows = [r for r in rows if not wanted or r.claim in wanted]
        results.extend(rows)
        check_records.append(
            {
                "topic": topic,
                "name": check.name,
                "claims": list(check.claims),
                "seconds": seconds,
                "results": [r.to_json() for r in rows],
            }
        )
        print(f"[{topic}.{check.name}] done in {seconds:.1f} s", file=sys.stderr, flush=True)

    print(ledger.format_table(results))
    name = topics[0] if len(topics) == 1 else "claims"
    run_config = {"full": args.full, "only": sorted(wanted), "topics": list(topics)}
    path = ledger.write_record(args.out, name, run_config, args.seed, check_records)
    failed = ledger.run_failed(results)
    print(f"\nrecord: {path}")
    print(
        "verdict: "
        + (
            "FAILED (a claim failed or a control was not rejected)"
            if failed
            else "all claims hold, all controls rejected"
        )
    )
    return 1 if failed else 0
