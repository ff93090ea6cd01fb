"""The allocation rule of VIP's released code, not the paper's (claim V13): the objective with
its gamma log(p_hat) n term, the relaxed step (solved exactly, or by SLSQP as the release runs it:
:mod:`theory.allocation_slsqp`), the rounding, and the dropping of prompts left under 4
rollouts. Built from :mod:`theory.allocation`'s relaxed solver and marginal-gain ranking.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from theory import allocation_slsqp, checks
from theory.allocation import (
    _SMALLEST_N,
    _close_budget,
    _interior_solution,
    _largest_count,
    _slope,
    _take_largest,
    _unit_gains,
    check_problem,
    per_prompt_objective,
    uniform_allocation,
)
from theory.variance import ESTIMATORS

RELEASED_GAMMA = {"rloo": 7e-4, "dr_grpo": 4e-4}  # weight of the gamma log(p_hat) n term
RELEASED_LOWER, RELEASED_UPPER = 4, 32
RELEASED_MIN_KEPT = 4  # prompts left with fewer rollouts are dropped (n = 0)
RELEASED_P_CLIP = 1e-6
ROUNDINGS = ("released", "exact")
SOLVERS = ("exact", "slsqp")  # the relaxed step solved exactly, or by SLSQP as the released code does
RELEASED_DECIMALS = 5  # the released trainer rounds p_hat to 5 decimals before allocating
RELEASED_EQUAL_STD = 1e-6  # the released code splits uniformly when std(p_hat) is below this


def _released_probability(p_hat) -> np.ndarray:
    """p_hat validated and clipped to [1e-6, 1 - 1e-6], as the released code does."""
    return np.clip(checks.probability("p_hat", p_hat), RELEASED_P_CLIP, 1.0 - RELEASED_P_CLIP)


def released_terms(p_hat, estimator: str, gamma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(a_q, c_q) of the released code's objective sum_q a_q g(n_q) - c_q n_q.

    a_q = p(1 - p) with p = p_hat clipped to [1e-6, 1 - 1e-6] (no factor 4 sigma_Z^2, which
    matters because gamma is absolute), and c_q = -gamma log p >= 0, so that the term
    gamma log(p_hat) n rewards rollouts on hard prompts.
    """
    checks.choice("estimator", estimator, ESTIMATORS)
    p = _released_probability(p_hat)
    gamma = RELEASED_GAMMA[estimator] if gamma is None else checks.nonnegative("gamma", gamma)
    return p * (1.0 - p), -float(gamma) * np.log(p)


def released_objective(p_hat, n, estimator: str, gamma: float | None = None) -> float:
    """sum_q a_q g(n_q) + gamma log(p_hat_q) n_q: the released code's objective."""
    a, c = released_terms(p_hat, estimator, gamma)
    n = checks.at_least("n", n, _SMALLEST_N[estimator])
    return float(np.sum(per_prompt_objective(a, n, estimator) - c * n))


def _relaxed_with_reward(a: np.ndarray, c: np.ndarray, budget, lower, upper, estimator: str) -> np.ndarray:
    """The minimiser of sum_q a_q g(n_q) - c_q n_q on the box with sum n = C (a_q > 0, c_q >= 0).

    KKT: a_q (-g'(n_q)) = mu - c_q on interior prompts; where mu <= c_q the objective is
    decreasing on the whole box and n_q = U. n_q(mu) is non-increasing; Brent's method on
    mu between the breakpoints (all at U) and (all at L) finds the root, as in
    :func:`relaxed_allocation` but with a prompt-specific threshold, so in linear space.
    """
    b = a.size
    if budget in (b * lower, b * upper):
        return np.full(b, budget / b)

    def n_of(mu: float) -> np.ndarray:
        with np.errstate(divide="ignore"):
            k = np.where(mu > c, a / np.maximum(mu - c, np.finfo(float).tiny), np.inf)
        return np.clip(_interior_solution(k, estimator), lower, upper)

    lo = float(np.min(c + a * _slope(upper, estimator)))
    hi = float(np.max(c + a * _slope(lower, estimator)))
    mu = optimize.brentq(
        lambda m: n_of(m).sum() - budget, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=400
    )
    return _close_budget(n_of(mu), np.ones(b, dtype=bool), budget, lower, upper)


def released_relaxed_allocation(
    p_hat, budget, lower=RELEASED_LOWER, upper=RELEASED_UPPER, estimator="rloo", gamma=None
) -> np.ndarray:
    """Step 2 of :func:`released_vip_allocation` before flooring: the real-valued minimiser
    of the released objective sum_q a_q g(n_q) + gamma log(p_hat_q) n_q on the box."""
    a, c = released_terms(p_hat, estimator, gamma)
    _, budget, lower, upper = check_problem(a, budget, lower, upper)
    return _relaxed_with_reward(a, c, budget, lower, upper, estimator)


def _shifted_unit_gains(lower: int, upper: int) -> np.ndarray:
    """h(n) - h(n+1) with h(n) = (n + 3)/(n + 4)^2, the released rounding's decrease per unit
    of a; h is Dr. GRPO's shape at n + 4, convex for n >= -1, so the gains are non-increasing."""
    n = np.arange(lower, upper + 1, dtype=float)
    h = (n + 3.0) / (n + 4.0) ** 2
    return h[:-1] - h[1:]


def _drop_small(n: np.ndarray, upper: int) -> np.ndarray:
    """Set prompts under RELEASED_MIN_KEPT rollouts to 0 and move their rollouts to the
    prompts with the most rollouts: largest n first (ties: lower index), each up to U.

    Our reading of "moved to the prompts with the most rollouts" is the one-unit-at-a-time
    loop "give to the argmax-n prompt still below U". Rollouts that no kept prompt can take
    (all at U) stay unspent, so sum n < C is possible, only when lower < 4.
    """
    dropped = n < RELEASED_MIN_KEPT
    freed = int(n[dropped].sum())
    n = np.where(dropped, 0, n)
    if freed == 0:
        return n
    kept = np.flatnonzero(~dropped)
    order = kept[np.lexsort((kept, -n[kept]))]
    capacity = upper - n[order]
    before = np.cumsum(capacity) - capacity
    n[order] += np.clip(freed - before, 0, capacity)
    return n


def released_vip_allocation(
    p_hat,
    budget,
    lower: int = RELEASED_LOWER,
    upper: int = RELEASED_UPPER,
    estimator: str = "rloo",
    gamma: float | None = None,
    rounding: str = "released",
    solver: str = "exact",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The allocation rule of VIP's *released code*, which departs from the paper (claim V13).

    1. objective sum_q a_q g(n_q) + gamma log(p_hat_q) n_q, with g of (6) or (8), a_q and
       gamma as in :func:`released_terms` (gamma = 7e-4 RLOO, 4e-4 Dr. GRPO), bounds [4, 32];
    2. its relaxed minimiser, floored;
    3. the remaining budget one unit at a time to the largest decrease of
       a_q (n + 3)/(n + 4)^2 (not the objective of step 1), n < U;
    4. prompts left under 4 rollouts set to 0, their rollouts moved (:func:`_drop_small`).
    When all (clipped) p_hat are equal the rule returns the uniform split.

    ``rounding="exact"`` replaces steps 2-3 by the exact integer optimum of the step-1
    objective (so that a study can separate what the objective and the rounding cost).
    Step 4 only acts when ``lower`` < 4.

    ``solver="exact"`` (the idealised rule) solves step 2 exactly, breaks ties by the lower
    prompt index and takes the uniform split only when all clipped p_hat are equal.
    ``solver="slsqp"`` runs the released code literally (:mod:`theory.allocation_slsqp`):
    SLSQP with scipy's defaults, which can stop short; its rounding, which zeroes prompts
    under 4 before the greedy step and breaks ties by float noise; the uniform split when
    std(p_hat) < 1e-6, with a random draw (``rng``) when C < 4B. It supports
    ``rounding="released"`` only.
    """
    checks.choice("rounding", rounding, ROUNDINGS)
    checks.choice("solver", solver, SOLVERS)
    if solver == "slsqp" and rounding != "released":
        raise ValueError(f"rounding: solver='slsqp' runs the released rounding only; got rounding={rounding!r}")
    p = _released_probability(p_hat)
    a, c = released_terms(p, estimator, gamma)
    _, budget, lower, upper = check_problem(a, budget, lower, upper)
    if solver == "slsqp":
        return _released_literally(p, a, c, budget, lower, upper, estimator, rng)
    if np.all(p == p[0]):
        return uniform_allocation(p.size, budget, lower, upper)
    largest = _largest_count(p.size, budget, lower, upper)
    if rounding == "exact":
        scores = a[:, None] * _unit_gains(lower, largest, estimator)[None, :] + c[:, None]
        n = _take_largest(scores, np.full(p.size, lower), budget - lower * p.size, lower)
    else:
        floors = np.floor(_relaxed_with_reward(a, c, budget, lower, upper, estimator)).astype(np.int64)
        scores = a[:, None] * _shifted_unit_gains(lower, largest)[None, :]
        n = _take_largest(scores, floors, budget - int(floors.sum()), lower)
    return _drop_small(n, upper)


def _released_literally(p, a, c, budget, lower, upper, estimator, rng) -> np.ndarray:
    """``solver="slsqp"`` of :func:`released_vip_allocation` (validated inputs)."""
    if np.std(p) < RELEASED_EQUAL_STD:
        return allocation_slsqp.released_equal_branch(p.size, budget, rng)
    relaxed = allocation_slsqp.slsqp_relaxed(a, -c, budget, lower, upper, estimator).x
    return allocation_slsqp.released_rounding(relaxed, a, budget, upper)
