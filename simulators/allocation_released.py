"""Claim V13: what the allocation rule of VIP's released code costs against the paper's rule.

Registered in ``simulators.allocation`` (check ``released_rule``). Exact computation, no
sampling: every rule sees the true success probabilities, and the total gradient variance
is sum_q Var(G_q) from Props 4.2/4.3 over the prompts that get rollouts.

- Decomposition, per success-probability law and estimator (C = 8B, B = 512):
  VIP with the study's bounds [3, 32] -> the same with L = 4 -> the released objective
  (gamma log p term) solved exactly -> the released rule as coded (its rounding) -> the
  released rule with L = 3, where its dropping of prompts under 4 rollouts acts. A dropped
  prompt adds no variance but loses its gradient: the rows report how many are dropped and
  their share of sum p(1 - p) (the prompts' signal) next to the variance.
- Its relaxed step against its own KKT conditions (claim), with the paper's KKT
  conditions (no gamma term) as the negative control.
- Its rounding against the exact integer optimum of its own objective: the gap histogram
  (gap relative to the variance part sum_q a_q g(n_q) of that optimum).
"""

from __future__ import annotations

import itertools

import numpy as np

from simulators.ledger import ClaimResult, claim, control, report
from simulators.registry import RunConfig
from simulators.success_laws import P_DISTRIBUTIONS, draw_p
from theory.allocation import (
    integer_allocation,
    marginal_value,
    released_objective,
    released_relaxed_allocation,
    released_terms,
    released_vip_allocation,
    success_variance_weights,
)
from theory.variance import gradient_variance

KKT_TOLERANCE = 1e-8
EXACT = 1e-12  # relative tolerance of an exact comparison in floating point


def step_allocations(p: np.ndarray, budget: int, estimator: str) -> dict:
    """The allocation of each step from the paper's rule to the released code's rule."""
    a = success_variance_weights(p)
    return {
        "VIP [3,32]": integer_allocation(a, budget, 3, 32, estimator),
        "VIP [4,32]": integer_allocation(a, budget, 4, 32, estimator),
        "+ gamma log p": released_vip_allocation(p, budget, 4, 32, estimator, rounding="exact"),
        "released rule": released_vip_allocation(p, budget, 4, 32, estimator),
        "released rule, L = 3": released_vip_allocation(p, budget, 3, 32, estimator),
    }


def variance_of(p: np.ndarray, n: np.ndarray, estimator: str) -> float:
    """sum_q Var(G_q) over the prompts with rollouts (a dropped prompt contributes nothing)."""
    kept = n > 0
    return float(np.sum(gradient_variance(estimator, n[kept], p=p[kept])))


def released_kkt_residual(a, c, n, lower, upper) -> float:
    """Relative spread of a_q (-g'(n_q)) + c_q over interior prompts plus violations of its
    ordering at the bounds (RLOO shape; 0 at a KKT point of the released objective)."""
    mu = marginal_value(a, n, "rloo") + c
    interior = (n > lower + 1e-7) & (n < upper - 1e-7)
    if not interior.any():
        return 0.0
    level = np.median(mu[interior])
    spread = np.max(np.abs(mu[interior] / level - 1))
    low = np.max(mu[n <= lower + 1e-7] / level - 1, initial=0.0)
    high = np.max(1 - mu[n >= upper - 1e-7] / level, initial=0.0)
    return float(max(spread, low, high))


def _decomposition(rng: np.random.Generator, b: int) -> list[dict]:
    cells = []
    for law, est in itertools.product(P_DISTRIBUTIONS, ("dr_grpo", "rloo")):
        p = draw_p(rng, law, b)
        steps = step_allocations(p, 8 * b, est)
        dropped = steps["released rule, L = 3"] == 0
        signal = p * (1 - p)
        cells.append(
            {
                "law": law,
                "C": 8 * b,
                "estimator": est,
                "total_variance": {step: variance_of(p, n, est) for step, n in steps.items()},
                "dropped": int(dropped.sum()),
                "dropped_signal_share": float(signal[dropped].sum() / signal.sum()),
                "unspent": int(8 * b - steps["released rule, L = 3"].sum()),
            }
        )
    return cells


def _gaps_and_kkt(rng: np.random.Generator, sizes, repeats: int) -> tuple[list[dict], list[dict]]:
    gaps, kkt = [], []
    for b, law, factor, est, _ in itertools.product(
        sizes, P_DISTRIBUTIONS, (8, 16), ("dr_grpo", "rloo"), range(repeats)
    ):
        p = draw_p(rng, law, b)
        budget = factor * b
        best = released_vip_allocation(p, budget, estimator=est, rounding="exact")
        coded = released_objective(p, released_vip_allocation(p, budget, estimator=est), est)
        exact = released_objective(p, best, est)
        # The objective's gamma term is negative and can bring it near 0, so the gap is taken
        # relative to its variance part sum_q a_q g(n_q) at the optimum (always > 0).
        scale = released_objective(p, best, est, gamma=0.0)
        gaps.append(
            {
                "B": b,
                "C": budget,
                "law": law,
                "estimator": est,
                "released": coded,
                "exact": exact,
                "rel_gap": (coded - exact) / scale,
            }
        )
        if est == "rloo":
            a, c = released_terms(p, est)
            n = released_relaxed_allocation(p, budget, 4, 32, est)
            kkt.append(
                {
                    "B": b,
                    "C": budget,
                    "law": law,
                    "residual": released_kkt_residual(a, c, n, 4, 32),
                    "paper_residual": released_kkt_residual(a, 0.0, n, 4, 32),
                }
            )
    return gaps, kkt


def _step_row(cell: dict) -> ClaimResult:
    base = cell["total_variance"]["VIP [3,32]"]
    ratios = {step: v / base for step, v in cell["total_variance"].items()}
    what = (
        f"{cell['estimator']}, p ~ {cell['law']}, C = 8B: variance / VIP[3,32]: "
        f"L=4 {ratios['VIP [4,32]']:.3f}, +gamma {ratios['+ gamma log p']:.3f}, "
        f"+rounding {ratios['released rule']:.3f}; L=3 drops {cell['dropped']} "
        f"({100 * cell['dropped_signal_share']:.1f}% of signal) at {ratios['released rule, L = 3']:.3f}"
    )
    return report("V13", what, details={"ratios": ratios, **cell}, estimate=ratios["released rule"], theory=1.0)


def run_released(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """V13: the released code's rule against the paper's, step by step (module docstring)."""
    cells = _decomposition(rng, 512)
    gaps, kkt = _gaps_and_kkt(rng, (64, 512, 4096) if config.full else (64, 512), 3 if config.full else 1)
    residual = max(k["residual"] for k in kkt)
    paper_residual = min(k["paper_residual"] for k in kkt)
    rel = np.array([g["rel_gap"] for g in gaps])
    suboptimal = int(np.sum(rel > EXACT))
    rows = [
        claim(
            "V13",
            f"released relaxed step meets its KKT conditions (RLOO) [{len(kkt)} instances]",
            holds=residual < KKT_TOLERANCE,
            rule=f"max res < {KKT_TOLERANCE:g}",
            statistic=residual,
            stat_name="max res",
            estimate=residual,
            theory=0.0,
            details={"cells": kkt},
        ),
        control(
            "V13",
            f"the paper's KKT conditions (9) at the released relaxed step [{len(kkt)} instances]",
            holds=paper_residual <= KKT_TOLERANCE,
            rule=f"min res <= {KKT_TOLERANCE:g}",
            statistic=paper_residual,
            stat_name="min res",
            estimate=paper_residual,
            theory=0.0,
            details={"cells": kkt},
        ),
        claim(
            "V13",
            f"exact integer optimum of the released objective <= its rounding [{len(gaps)} instances]",
            holds=bool(rel.min() >= -EXACT),
            rule=f"min rel >= -{EXACT:g}",
            statistic=float(rel.min()),
            stat_name="min rel",
            estimate=float(rel.min()),
            theory=0.0,
            details={"cells": gaps},
        ),
        report(
            "V13",
            f"released rounding vs its objective's optimum: suboptimal in {suboptimal}/{len(rel)}, "
            f"median rel gap {np.median(rel):.1e}, max {rel.max():.1e}",
            details={"cells": gaps, "suboptimal": suboptimal},
            estimate=float(np.median(rel)),
            theory=0.0,
        ),
    ]
    return rows + [_step_row(c) for c in cells]
