"""Knapsack RL's rollout allocation (arXiv 2509.25849) as its released code computes it (claim V14).

Source: liziniu/KnapsackRL at commit ca5d5f5b7e933378d916d05d1aeb4ae9de929ee5, file
``verl/trainer/ppo/exploration_utils.py`` (EU below), function ``sampling_budget_by_knapsack``
(EU 20-196) and ``solve_by_dp`` (EU 257-414); defaults in
``examples/knapsack_trainer/run_knapsack_grpo_7b.sh`` (SH) 77-80. The rule the code runs:

1. every prompt starts at min_n rollouts (EU 89, 93, 96; ``negative_n = positive_n = min_n``,
   EU 61-64 and SH 77-79); a prompt with 0 < p < 1 is *effective*;
2. the remaining budget R = C - B min_n (EU 108) is placed by an exact-capacity knapsack over
   the effective prompts (EU 170-177): prompt i takes k_i in {0, ..., max_n - min_n} extra
   rollouts with sum k_i equal to the capacity, maximising sum_i V_i(k_i), where (EU 369-373)

       V(k) = (1 - p^(k+m) - (1-p)^(k+m)) p (1-p)^2   for k >= 1,   V(0) = 0,   m = min_n:

   the probability that a group of k + m rollouts has both outcomes times the code's
   "InfoGain" p (1-p)^2. The m base rollouts are not credited (V(0) = 0, not V at n = m);
3. the fallback (EU 139-167, ``allow_fallback=True``, ``alpha=0.9``): with
   cost_i = ln(1 - alpha) / ln(max(p_i, 1 - p_i)) (EU 83; the n at which max(p, 1-p)^n = 0.1)
   and est = sum_i floor(min(max_n, cost_i)) over the effective prompts (EU 139-141), if
   est < R the knapsack's capacity becomes est and R - est is split evenly (the remainder one
   each to the first) over the prompts with p == 0, or over every non-effective prompt when
   none has p == 0 (EU 148-161). With no effective prompt, R goes the same way (EU 113-134).

The knapsack is solved exactly without the DP. Write f(n) = 1 - p^n - (1-p)^n, q = 1 - p,
w = p q^2, so V(k) = w f(k + m) for k >= 1. The marginal gains are

    D(1) = V(1) - V(0) = w f(m + 1),    D(k) = V(k) - V(k-1) = w p q (p^(k+m-2) + q^(k+m-2)), k >= 2,

using f(n) - f(n-1) = p^(n-1) q + q^(n-1) p. For k >= 2, D(k) strictly decreases in k
(p^j + q^j decreases in j for 0 < p < 1). And D(1) > D(2): f(m + 1) >= f(2) = 2 p q for
m >= 1, while D(2)/w = p q (p^m + q^m) < p q because p^m + q^m < p + q = 1. So each V_i
is concave on {0, ..., max_n - min_n}, every gain is positive, and a separable concave
maximisation under one sum constraint is solved by taking the largest marginal gains
(theory.allocation._take_largest): any other allocation can move a unit from a smaller gain
to a larger one. The exact-capacity DP of the code and this greedy have the same optimum
value; they can differ only between allocations of equal value (ties). The greedy costs one
np.partition over (effective prompts) x min(max_n - min_n, capacity) gains instead of the DP's
O(B C max_n) loop. Written by hand because no library solves this knapsack more directly
(scipy.optimize.milp would run a general branch-and-bound on the same problem).

Choices where the code leaves one, or where the project's contract differs:

- p comes from the project's predictors, which give p_hat for every prompt: the code's
  "invalid" prompts (fewer than 8 observed rewards, default n = 8 and, by its zero-filled
  ``success_rates``, counted as p == 0 in the fallback, EU 70, 102, 116, 148) do not arise;
- with a predictor whose p_hat lies strictly in (0, 1) (the project's GP) every prompt is
  effective, so the fallback has no recipient. The code then divides by an empty candidate list
  and fails its budget assertion (EU 156, 183). Here the knapsack keeps what no non-effective
  prompt can take: the whole R when every prompt is effective;
- the project requires min_n <= n <= max_n and sum n = C. The code can push a prompt above
  max_n (fallback recipients, EU 156-161; the DP's leftover when the capacity exceeds what the
  effective prompts can take, EU 383-412). Here the knapsack's capacity is capped at
  (effective prompts) x (max_n - min_n) and every non-effective prompt at max_n: the units
  the fallback moves go to the p == 0 prompts first, then to the p == 1 prompts; what none
  of them can take stays with the knapsack, and what the knapsack cannot take goes to them;
- est counts each effective prompt's min_n base once more than R does (costs are total
  rollouts, R excludes the base): kept as the code computes it, since it decides the split;
- ties between equal gains go to the lower prompt index (the code's DP breaks them by its
  scan order); any tie-break gives the same value;
- the cost and gains are computed in float64 (the code uses float32 arrays, EU 68-70), with
  log1p so that p_hat near 0 or 1 keeps a finite positive cost, and the gains are ranked in log
  space so that they do not underflow to ties (as theory.allocation ranks VIP's gains).
"""

from __future__ import annotations

import numpy as np

from theory import checks
from theory.allocation import _check_box, _largest_count, _take_largest

KNAPSACK_MIN_N = 2  # min_n: EU 23, SH 77
KNAPSACK_MAX_N = 128  # max_n: SH 80
KNAPSACK_ALPHA = 0.9  # alpha of the fallback's cost: EU 25


def effective(p: np.ndarray) -> np.ndarray:
    """The prompts the knapsack allocates to: 0 < p < 1 (EU 81)."""
    return (p > 0.0) & (p < 1.0)


def knapsack_value(p_hat, n, lower: int = KNAPSACK_MIN_N) -> float:
    """sum_i V_i(n_i - lower): the objective Knapsack RL's DP maximises (EU 369-373).

    V(k) = (1 - p^(k+L) - (1-p)^(k+L)) p (1-p)^2 for k >= 1 and V(0) = 0, with L = min_n;
    prompts with p in {0, 1} have value 0.
    """
    p = checks.probability("p_hat", p_hat)
    n = checks.at_least("n", n, lower)
    if n.shape != p.shape:
        raise ValueError(f"n must have the shape of p_hat {p.shape}; got {n.shape}")
    q = 1.0 - p
    value = (1.0 - p**n - q**n) * p * q**2
    return float(np.sum(np.where(n > lower, value, 0.0)))


def fallback_cost(p: np.ndarray, alpha: float) -> np.ndarray:
    """cost_i = ln(1 - alpha) / ln(max(p_i, 1 - p_i)) (EU 83) for 0 < p_i < 1, written with
    log1p of min(p, 1 - p) so that p_i near 0 or 1 gives a large finite cost, not a division by 0."""
    s = np.minimum(p, 1.0 - p)  # exact: p itself below 1/2, and 1 - p is exact above it
    with np.errstate(over="ignore"):  # a subnormal s gives cost inf, i.e. "max_n"
        return np.log1p(-alpha) / np.log1p(-s)


def knapsack_units(p: np.ndarray, remaining: int, lower: int, upper: int, alpha: float, fallback: bool) -> int:
    """The extra rollouts (beyond ``lower``) the knapsack places on the effective prompts.

    R = ``remaining``; est < R triggers the fallback (EU 139-167), which gives the knapsack
    est instead of R. The result is then kept within what the bounds allow: at least what the
    non-effective prompts cannot take (R - (non-effective) x (U - L)), at most what the
    effective prompts can take ((effective) x (U - L)). With no non-effective prompt the first
    bound is R, so the fallback moves nothing.
    """
    eff = effective(p)
    units = remaining
    if fallback:
        est = int(np.floor(np.minimum(upper, fallback_cost(p[eff], alpha))).sum())
        if est < remaining:
            units = est
    room = upper - lower
    return int(min(max(units, remaining - int((~eff).sum()) * room), int(eff.sum()) * room))


def log_gain_scores(p: np.ndarray, lower: int, width: int) -> np.ndarray:
    """log D_i(k) for k = 1..width (column k - 1), the marginal gains of the module docstring,
    for effective prompts (0 < p < 1); non-increasing along each row.

    log D(1) = log w + log f(L + 1) and log D(k) = log w + log p + log q + log(p^j + q^j),
    j = k + L - 2, with w = p q^2. f(n) = -expm1(n log1p(-s)) - s^n, s = min(p, q), keeps
    its digits when s is tiny (1 - (1-s)^n would round to 0).
    """
    log_p, log_q = np.log(p)[:, None], np.log1p(-p)[:, None]
    s = np.minimum(p, 1.0 - p)[:, None]
    first = np.log(-np.expm1((lower + 1) * np.log1p(-s)) - s ** (lower + 1))
    j = np.arange(lower, lower + width - 1)[None, :]
    later = log_p + log_q + np.logaddexp(j * log_p, j * log_q)
    scores = log_p + 2.0 * log_q + np.concatenate([first, later], axis=1)
    # non-increasing in exact arithmetic (module docstring); this removes last-digit rounding inversions
    return np.minimum.accumulate(scores, axis=1)


def fill_rest(n: np.ndarray, p: np.ndarray, budget: int, upper: int) -> np.ndarray:
    """Give budget - sum(n) to the non-effective prompts: the p == 0 prompts first, then the
    p == 1 prompts, each group evenly up to ``upper`` with the remainder one each to the first
    (EU 120-125, 156-161). Each group starts at one common count (min_n)."""
    n = n.copy()
    for group in (np.flatnonzero(p == 0.0), np.flatnonzero(p == 1.0)):
        rest = budget - int(n.sum())
        if rest == 0 or group.size == 0:
            continue
        give = min(rest, group.size * (upper - int(n[group[0]])))
        n[group] += give // group.size
        n[group[: give % group.size]] += 1
    return n


def knapsack_allocation(
    p_hat,
    budget,
    lower: int = KNAPSACK_MIN_N,
    upper: int = KNAPSACK_MAX_N,
    alpha: float = KNAPSACK_ALPHA,
    fallback: bool = True,
) -> np.ndarray:
    """Knapsack RL's allocation (:mod:`theory.allocation_knapsack`: source, value, proof, choices).

    ``lower`` and ``upper`` are the code's min_n and max_n. Every prompt starts at L; the
    budget left, C - B L, goes to the prompts with 0 < p_hat < 1 by the exact knapsack
    maximising sum_i V_i(k_i) (:func:`theory.knapsack_value`), solved by
    taking its largest marginal gains (each V_i is concave). With ``fallback`` (the code's
    default, ``alpha`` = 0.9), when est = sum_i floor(min(U, cost_i)) < C - B L the knapsack
    places est and the rest goes to the p_hat == 0 prompts, then the p_hat == 1 prompts, each
    up to U; what they cannot take stays with the knapsack. Returns integer counts with sum C
    and L <= n <= U.
    """
    p = checks.probability("p_hat", p_hat)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p_hat must be a non-empty 1-D array (one success rate per prompt); got shape {p.shape}")
    why = "Knapsack RL's min_n: a group of 2 is the smallest with a non-zero advantage"
    budget, lower, upper = _check_box(p.size, budget, lower, upper, KNAPSACK_MIN_N, why)
    try:  # a number in (0, 1); NaN fails the comparison
        valid = not isinstance(alpha, (str, bytes)) and np.ndim(alpha) == 0 and 0.0 < float(alpha) < 1.0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"alpha must be a number in (0, 1) (the fallback's confidence level); got {alpha!r}")
    if not isinstance(fallback, (bool, np.bool_)):
        raise ValueError(f"fallback must be True or False; got {fallback!r}")
    _largest_count(p.size, budget, lower, upper)  # refuses a problem too large to rank at once
    n = np.full(p.size, lower, dtype=np.int64)
    units = knapsack_units(p, budget - lower * p.size, lower, upper, alpha, bool(fallback))
    if units > 0:
        eff = effective(p)
        scores = log_gain_scores(p[eff], lower, min(upper - lower, units))
        n[eff] = _take_largest(scores, n[eff], units, lower)
    return fill_rest(n, p, budget, upper)
