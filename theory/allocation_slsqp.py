"""VIP's released allocation step by step as its code runs it (claim V13, literal mode).

Source: HieuNT91/VIP, ``src/vip/allocation/bernoulli_allocation.py`` at commit 0c17c79
(functions ``solve``, ``allocation_rounding``, ``enforce_min_after_rounding`` and
``allocate_rollout``). :func:`theory.allocation_released.released_vip_allocation`
solves the same objective exactly (``solver="exact"``, the idealised rule); with
``solver="slsqp"`` it calls the functions here, which keep every numerical choice of that
code, because those choices decide its output:

- the relaxed step is scipy's SLSQP from the uniform start C/B, the bounds [L, U], the
  equality constraint sum n = C, no gradient (scipy's 2-point finite differences) and the
  default tolerance and iteration limit (ftol 1e-6, 100 iterations). It can stop short of the
  minimiser, or at the iteration limit, and its point can miss the budget;
- the rounding floors, zeroes every prompt under 4 *before* the greedy step, then gives the
  remaining units one at a time to the largest decrease of sum_q a_q (n_q + 3)/(n_q + 4)^2,
  each decrease computed as the difference of two full sums: equal prompts differ by float
  noise, and ``np.argsort`` (not stable) orders them, so ties are broken by that noise;
- a prompt that the greedy step brings back to 1..3 rollouts is zeroed again and its units go,
  one at a time, to the prompt with the most rollouts (``np.argsort`` order again) under U.

The outputs depend on the processor, as the released code's do, in two ways: SLSQP's iterates
carry the float noise of the BLAS kernels that OpenBLAS picks for the CPU (and its thread
count), which moves the point where SLSQP stops short; and numpy leaves the order of *equal*
values in ``np.argsort`` to its sort implementation, which differs with the CPU's SIMD level
(x86-simd-sort on AVX2/AVX-512, introsort without), so exact ties go to different prompts.
Tests therefore pin outputs only where they are stable under both (see
``tests/test_theory_allocation_slsqp.py``). Written by hand because the point is to reproduce
that code's arithmetic, which no library offers.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

MIN_KEPT = 4  # the released code's min_keep: prompts under 4 rollouts get none
# Rows of the (rows x B) table of perturbed sums built at once by the greedy step: bounds its
# memory at ~8 MB per 1,000 prompts.
_ROWS_PER_BLOCK = 1024


class ReleasedRuleError(ValueError):
    """The released code itself stops here (it raises or asserts on the same input)."""


def released_objective_function(a: np.ndarray, b: np.ndarray, estimator: str):
    """The function SLSQP minimises: sum_q a_q/(n_q - 1) + b_q n_q (RLOO, ``V_rloo``) or
    sum_q a_q (n_q - 1)/n_q^2 + b_q n_q (Dr. GRPO, ``V_grpo``), b_q = gamma log p_q, with
    the operations in the released order (SLSQP's iterates depend on the last bit)."""
    if estimator == "rloo":
        return lambda n: np.sum(a / (n - 1) + b * n)
    return lambda n: np.sum((a * (n - 1) / n**2) + b * n)


def slsqp_relaxed(a: np.ndarray, b: np.ndarray, budget: int, lower: int, upper: int, estimator: str):
    """The released relaxed step: scipy.optimize.minimize(method="SLSQP") from n = C/B with
    scipy's defaults. Returns scipy's OptimizeResult (``x``, ``nit``, ``status``, ``success``)."""
    constraint = {"type": "eq", "fun": lambda n: np.sum(n) - budget}
    start = np.ones(a.size) * (budget / a.size)
    return optimize.minimize(
        released_objective_function(a, b, estimator),
        start,
        method="SLSQP",
        bounds=[(lower, upper)] * a.size,
        constraints=[constraint],
    )


def _shifted_terms(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """a_q (n_q + 3)/(n_q + 4)^2, the summands of the released rounding's objective."""
    return a * (n + 3) / (n + 4) ** 2


def _greedy_gains(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """For each q: sum(terms(n)) - sum(terms(n + e_q)), each sum numpy's pairwise sum of the
    full B-vector, as the released loop computes them (the row sums of a 2-D table along the
    contiguous axis use the same pairwise summation as a 1-D sum, so the noise is identical)."""
    terms = _shifted_terms(a, n.astype(float))
    bumped = _shifted_terms(a, n.astype(float) + 1.0)
    base = float(terms.sum())
    gains = np.empty(a.size)
    for start in range(0, a.size, _ROWS_PER_BLOCK):
        rows = np.arange(start, min(start + _ROWS_PER_BLOCK, a.size))
        table = np.tile(terms, (rows.size, 1))
        table[np.arange(rows.size), rows] = bumped[rows]
        gains[rows] = base - table.sum(axis=1)
    return gains


def _descending(values: np.ndarray) -> np.ndarray:
    """The released code's ``np.argsort(values)[::-1]``: indices from the largest value down,
    equal values in the (processor-dependent) order of numpy's default sort, reversed."""
    return np.argsort(values)[::-1]


def _first_below(order: np.ndarray, n: np.ndarray, upper: int) -> int:
    """The first prompt of ``order`` with n < U (the released ``for idx in ...: break``)."""
    room = order[n[order] < upper]
    if room.size == 0:
        raise ReleasedRuleError(f"every prompt is at upper = {upper}; the released code raises here too")
    return int(room[0])


def _refill_from_small(n: np.ndarray, upper: int) -> np.ndarray:
    """``enforce_min_after_rounding``: prompts with 1..3 rollouts get 0; their units go one at
    a time to the first prompt of argsort(n) reversed (most rollouts first) below U."""
    n = n.copy()
    small = n < MIN_KEPT
    freed = int(n[small].sum())
    n[small] = 0
    for _ in range(freed):
        n[_first_below(_descending(n), n, upper)] += 1
    return n


def released_rounding(relaxed: np.ndarray, a: np.ndarray, budget: int, upper: int) -> np.ndarray:
    """``allocation_rounding``: floor, zero prompts under 4, greedy on the shifted objective
    with float-noise tie-breaks, then :func:`_refill_from_small` if any prompt has 1..3."""
    n = np.floor(relaxed).astype(np.int64)
    n[n < MIN_KEPT] = 0
    remaining = budget - int(n.sum())
    if remaining < 0:
        raise ReleasedRuleError(
            f"SLSQP's relaxed point floors to {int(n.sum())} rollouts, more than the budget {budget}; "
            "the released code raises here too"
        )
    if remaining == 0:
        return n
    for _ in range(remaining):
        n[_first_below(_descending(_greedy_gains(a, n)), n, upper)] += 1
    if np.any((n > 0) & (n < MIN_KEPT)):
        n = _refill_from_small(n, upper)
    return n


def released_equal_branch(n_prompts: int, budget: int, rng: np.random.Generator | None) -> np.ndarray:
    """The released rule when std(p_hat) < 1e-6: floor(C/B) each and the rest to the first
    prompts; when C < 4B, C/4 prompts drawn with replacement get 4 rollouts per draw (a prompt
    drawn k times gets 4k; needs ``rng``, and C a multiple of 4, as the released code asserts)."""
    if budget >= MIN_KEPT * n_prompts:
        n = np.full(n_prompts, budget // n_prompts, dtype=np.int64)
        n[: budget - int(n.sum())] += 1
        return n
    if budget % MIN_KEPT:
        raise ReleasedRuleError(
            f"budget = {budget} < 4 x {n_prompts} prompts with all p_hat equal must be a multiple of 4 "
            "(the released code asserts this)"
        )
    if rng is None:
        raise ValueError(
            f"rng: with all p_hat equal and budget = {budget} < 4 x {n_prompts} prompts the released rule "
            "draws prompts at random; pass a numpy.random.Generator"
        )
    draws = rng.choice(n_prompts, size=budget // MIN_KEPT, replace=True)
    return MIN_KEPT * np.bincount(draws, minlength=n_prompts).astype(np.int64)
