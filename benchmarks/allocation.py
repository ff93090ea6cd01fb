"""Benchmark of the allocators against the cvxpy oracle, measured in one run.

    python -m benchmarks.allocation [--repeats 20]

Prints the median time of allocate(method="exact"), allocate(method="paper"), the released
code's rule (its own bounds [4, 32]) and the cvxpy oracle of the relaxed problem, for
B in {64, 512, 4096, 65536} at C = 8B and 16B (L = 3, U = 32), and the oracle/exact ratio.
VIP Table 4 reports 29.956 s per step for its allocation. The oracle is timed only where it
finishes in reasonable time.
"""

from __future__ import annotations

import argparse

import numpy as np

from simulators.allocation_oracle import cvxpy_relaxed
from simulators.timing import median_seconds
from theory.allocation import allocate, success_variance_weights
from theory.allocation_released import released_vip_allocation

ORACLE_MAX_B = 4096  # the Dr. GRPO cutting-plane oracle needs minutes beyond this


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.allocation")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--estimator", default="rloo", choices=["rloo", "dr_grpo"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"estimator {args.estimator}, L = 3, U = 32; medians over {args.repeats} runs (oracle: 3)")
    print(
        f"{'B':>6} {'C':>8} {'exact ms':>10} {'paper ms':>10} {'released ms':>12} {'cvxpy ms':>10} {'cvxpy/exact':>12}"
    )
    for b in (64, 512, 4096, 65536):
        p = rng.random(b)
        a = success_variance_weights(p)
        for factor in (8, 16):
            budget = factor * b
            exact = median_seconds(lambda: allocate(a, budget, 3, 32, args.estimator, "exact"), args.repeats)
            paper = median_seconds(lambda: allocate(a, budget, 3, 32, args.estimator, "paper"), args.repeats)
            released = median_seconds(
                lambda: released_vip_allocation(p, budget, estimator=args.estimator), args.repeats
            )
            if b <= ORACLE_MAX_B:
                oracle = median_seconds(lambda: cvxpy_relaxed(a, budget, 3, 32, args.estimator), 3)
                oracle_cells = f"{oracle * 1e3:10.1f} {oracle / exact:11.0f}x"
            else:
                oracle_cells = f"{'skipped':>10} {'':>12}"
            print(f"{b:6d} {budget:8d} {exact * 1e3:10.3f} {paper * 1e3:10.3f} {released * 1e3:12.3f} {oracle_cells}")
    a = success_variance_weights(rng.random(512))
    target = median_seconds(lambda: allocate(a, 4096, 3, 32, args.estimator, "exact"), 200)
    gains = rng.random(512 * (32 - 3))  # the B (U - L) marginal gains the exact rule ranks
    units = 4096 - 3 * 512
    floor = median_seconds(lambda: np.partition(gains, gains.size - units), 200)
    print(
        f"\nallocate(method='exact') at B = 512, C = 4096: median {target * 1e3:.3f} ms (target <= 0.1 ms); "
        f"its floor, one np.partition of the {gains.size:,} gains for the top {units:,}: {floor * 1e3:.3f} ms "
        f"({target / floor:.1f}x the floor)"
    )


if __name__ == "__main__":
    main()
