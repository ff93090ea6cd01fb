"""Rerun the pinned-output tests under other BLAS kernels and numpy SIMD levels.

``python scripts/pin_kernels.py`` runs ``pytest -m pinned`` once per environment: OpenBLAS's
kernels forced with ``OPENBLAS_CORETYPE`` (numpy's and scipy's OpenBLAS are built with
DYNAMIC_ARCH and otherwise pick by processor), 1 and 2 BLAS threads, and numpy's dispatched
SIMD code turned off down to its baseline with ``NPY_DISABLE_CPU_FEATURES`` (what a processor
without AVX2 or AVX-512 runs). It prints one line per environment and exits 1 if a pinned test
fails in any of them. ``--v13`` instead runs the V13 check (``released_rule``, quick mode, seed 0;
``--full`` for its full grid) in each environment and prints its literal-mode counts, the
figures of the README that move with the machine, and their range over the environments.

This is a developer's check of a new pin, not part of CI: forcing a kernel is only safe on a
processor that can run it, so an environment that dies of an illegal instruction is reported
as "not runnable here" and skipped, and the machine's own OPENBLAS_CORETYPE (which some
processors need) is left alone by the tests themselves.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("default", "Prescott", "Nehalem", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake")
THREADS = (1, 2)
# numpy's dispatch levels above its x86-64-v2 baseline, as numpy 2.4 names them
# (numpy.show_config() lists the names of the installed numpy).
SIMD = {"default": "", "no AVX-512": "X86_V4 AVX512_ICL AVX512_SPR", "baseline": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"}


def environment(kernel: str, threads: int, simd: str) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    if kernel != "default":
        env["OPENBLAS_CORETYPE"] = kernel
    if SIMD[simd]:
        env["NPY_DISABLE_CPU_FEATURES"] = SIMD[simd]
    return env


def run(kernel: str, threads: int, simd: str, marker: str) -> tuple[str, bool]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-m", marker]
    proc = subprocess.run(cmd, cwd=ROOT, env=environment(kernel, threads, simd), capture_output=True, text=True)
    if proc.returncode == -signal.SIGILL:
        return "not runnable here (illegal instruction)", True
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else proc.stderr.strip().splitlines()[-1]
    return summary, proc.returncode == 0


V13_PROBE = """
import json, sys
from simulators.allocation_released import run_released
from simulators.registry import RunConfig, check_rng
rows = run_released(RunConfig(full=sys.argv[1] == "full", progress=False), check_rng(0, "released_rule"))
literal = [r for r in rows if r.kind == "report" and "causes" in (r.details or {})]
counts = {r.details["cells"][0]["B"]: r.details["causes"] | {"limit": r.details["iteration_limit"]} for r in literal}
print(json.dumps({str(b): c for b, c in counts.items()}))
"""


def v13_counts(kernel: str, threads: int, simd: str, full: bool) -> dict | None:
    """The V13 literal rows' counts per B in one environment (None where it cannot run)."""
    cmd = [sys.executable, "-c", V13_PROBE, "full" if full else "quick"]
    proc = subprocess.run(cmd, cwd=ROOT, env=environment(kernel, threads, simd), capture_output=True, text=True)
    if proc.returncode == -signal.SIGILL:
        return None
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.splitlines()[-1])


def spread(results: list[dict]) -> str:
    """Per B and count, min-max over the environments."""
    parts = []
    for b in results[0]:
        counts = {k: [r[b][k] for r in results] for k in results[0][b]}
        parts.append(f"B={b}: " + ", ".join(f"{k} {min(v)}-{max(v)}" for k, v in counts.items()))
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marker", default="pinned", help="pytest marker expression (default: pinned)")
    parser.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated OPENBLAS_CORETYPE values")
    parser.add_argument(
        "--simd", default=",".join(SIMD), help=f"comma-separated numpy SIMD levels of {', '.join(SIMD)}"
    )
    parser.add_argument("--v13", action="store_true", help="the V13 literal-mode counts in each environment")
    parser.add_argument("--full", action="store_true", help="with --v13: the full grid (minutes per environment)")
    args = parser.parse_args(argv)
    environments = list(itertools.product(args.kernels.split(","), THREADS, args.simd.split(",")))
    if args.v13:
        results = []
        for kernel, threads, simd in environments:
            counts = v13_counts(kernel, threads, simd, args.full)
            print(f"{kernel:<12} threads={threads}  numpy SIMD {simd:<11} {counts or 'not runnable here'}", flush=True)
            results += [counts] if counts else []
        print("range over the environments:\n" + spread(results))
        return 0
    ok = True
    for kernel, threads, simd in environments:
        summary, passed = run(kernel, threads, simd, args.marker)
        ok &= passed
        print(f"{kernel:<12} threads={threads}  numpy SIMD {simd:<11} {summary}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
