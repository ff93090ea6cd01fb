"""Per-prompt rollout allocation under a budget (VIP §5.2, App. A.2, App. D, App. E.3).

Problem (5): minimise sum_q f_q(n_q) subject to sum_q n_q = C and n_q in {L, ..., U}, with

    f_q(n) = a_q (n - 1) / n^2   (Dr. GRPO, Prop 4.2)    f_q(n) = a_q / (n - 1)   (RLOO, Prop 4.3)

and a_q = 4 sigma_Z^2 p_q (1 - p_q) (binary rewards) or sigma_Z^2 Var(R_q) (App. E.3).

Discrete convexity (the reason the marginal-gain threshold in :func:`integer_allocation`
is exact). Write f_q = a_q g(n). For RLOO g(n) = 1/(n-1) has g'' = 2/(n-1)^3 > 0 for n > 1;
for Dr. GRPO g(n) = (n-1)/n^2 has g'' = (2n - 6)/n^4 >= 0 for n >= 3. A function convex
on [L, U] has non-increasing forward differences on the integers there, so the marginal
gains d_q(n) = f_q(n) - f_q(n+1) = a_q (g(n) - g(n+1)) are non-increasing in n for
n >= L >= 3. For a separable objective with non-increasing marginal gains and one sum
constraint, an allocation is optimal iff no unit can be moved from one prompt to another
with a gain: taking the C - B L largest gains d_q(n), n = L..U-1, over all prompts (each
prompt's gains are taken in order because they decrease) is therefore optimal. This is
why L >= 3 is required: for Dr. GRPO and n < 3 the gains increase and greedy fails.

Conventions chosen here (VIP is silent):
- prompts with a_q = 0 (p_hat in {0, 1}) have zero gains; they get L unless the budget
  cannot be spent otherwise, in which case the leftover units go to them lowest index first;
- ties between equal gains are broken by the lower prompt index (any tie-break is optimal);
- C = B L and C = B U have the single feasible allocation (L, ..., L) / (U, ..., U);
- budget and bounds are taken as Python ints (any integer or whole float type; NaN refused);
- the integer rules rank B x (n_max - L) marginal gains at once, n_max = min(U, C - (B - 1) L)
  (no prompt can get more); a problem above MAX_GAIN_SLOTS of them is refused, naming upper
  (``method="relaxed"`` needs O(B) memory and has no such limit).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from theory import checks
from theory.variance import ESTIMATORS

# Per-prompt objective shapes g(n), f_q = a_q g(n): the two estimators of VIP, and
# "proportional" (g = 1/n), whose relaxed minimiser is n_q proportional to sqrt(a_q) within
# the box: the normalisation of the App. C.1 heuristics, with a_q = w_q^2.
_SHAPES = ESTIMATORS + ("proportional",)
# The integer rules rank B x (n_max - L) marginal gains at once (:func:`_take_largest`), with
# n_max = min(U, C - (B - 1) L): about 30 bytes each at the peak, so 16M slots is ~0.5 GB.
MAX_GAIN_SLOTS = 16_000_000


# --- inputs ---------------------------------------------------------------------------


def success_variance_weights(p_hat, sigma_z2=1.0) -> np.ndarray:
    """a_q = 4 sigma_Z^2 p_q (1 - p_q): the weights of problems (6) and (8) for +-1 rewards (§5.2)."""
    p_hat = checks.probability("p_hat", p_hat)
    sigma_z2 = checks.nonnegative("sigma_z2", sigma_z2)
    return 4.0 * sigma_z2 * p_hat * (1.0 - p_hat)


def posterior_success_variance_weights(success_variance, sigma_z2=1.0) -> np.ndarray:
    """a_q = 4 sigma_Z^2 E[p_q (1 - p_q)], the posterior expectation of §5.2's weight (the
    ``vip_posterior`` rule, ours); ``success_variance`` is E[p_q (1 - p_q)], in [0, 1/4]."""
    v = checks.as_float_array("success_variance", success_variance)
    if np.any((v < 0.0) | (v > 0.25 * (1.0 + 1e-12))):  # 1e-12: quadrature rounding at p = 1/2
        raise ValueError(
            f"success_variance must lie in [0, 1/4] (E[p (1 - p)] of a probability p); "
            f"got values in [{v.min()}, {v.max()}]"
        )
    return 4.0 * checks.nonnegative("sigma_z2", sigma_z2) * v


def check_problem(a, budget, lower, upper) -> tuple[np.ndarray, int, int, int]:
    """Validate an allocation problem; return ``a`` as a 1-D float array and the budget and
    bounds as Python ints (so that B L and C - B L cannot overflow a fixed-width integer).

    L >= 3 (VIP §5.2: convexity of (6) and exactness of the greedy), L <= U,
    integer budget with B L <= C <= B U, a finite and >= 0.
    """
    a = checks.nonnegative("a", a)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"a must be a non-empty 1-D array (one weight per prompt); got shape {a.shape}")
    return (a, *_check_box(a.size, budget, lower, upper, 3, "VIP §5.2: the objective is convex only for n >= 3"))


def _check_box(b: int, budget, lower, upper, min_lower: int, why: str) -> tuple[int, int, int]:
    """Budget and bounds of a B-prompt problem as Python ints: min_lower <= L <= U (``why``
    says where min_lower comes from) and an integer budget with B L <= C <= B U."""
    budget, lower, upper = (
        checks.integer("budget", budget),
        checks.integer("lower", lower),
        checks.integer("upper", upper),
    )
    if lower < min_lower:
        raise ValueError(f"lower must be >= {min_lower} ({why}); got {lower}")
    if upper < lower:
        raise ValueError(f"upper must be >= lower = {lower}; got {upper}")
    if not b * lower <= budget <= b * upper:
        raise ValueError(
            f"budget must lie in [B*lower, B*upper] = [{b * lower}, {b * upper}] for B = {b} prompts; got {budget}"
        )
    return budget, lower, upper


def _largest_count(b: int, budget: int, lower: int, upper: int) -> int:
    """The most rollouts one prompt can get, min(U, C - (B - 1) L) (every other prompt keeps
    at least L): the integer rules rank marginal gains up to it only. Refuses a problem whose
    B x (that - L) gains exceed MAX_GAIN_SLOTS (memory grows with B U)."""
    largest = min(upper, budget - (b - 1) * lower)
    if b * (largest - lower) > MAX_GAIN_SLOTS:
        raise ValueError(
            f"upper: B * (min(upper, budget - (B-1)*lower) - lower) = {b * (largest - lower):,} marginal gains "
            f"exceed the limit of {MAX_GAIN_SLOTS:,} (memory grows with B * upper); "
            f"got B = {b}, upper = {upper}, budget = {budget}"
        )
    return largest


# --- per-prompt objectives ----------------------------------------------------------------


def per_prompt_objective(a, n, estimator: str) -> np.ndarray:
    """f_q(n): a (n-1)/n^2 for Dr. GRPO, a/(n-1) for RLOO (the summands of (6) and (8));
    a/n for the internal "proportional" shape of the App. C.1 baselines."""
    a, n = _objective_inputs(a, n, estimator, _SHAPES)
    return a * _G[estimator](n)


# g(n) of each shape, f_q = a_q g(n)
_G = {
    "dr_grpo": lambda n: (n - 1.0) / n**2,
    "rloo": lambda n: 1.0 / (n - 1.0),
    "proportional": lambda n: 1.0 / n,
}


# the smallest group size at which each shape's f_q(n) is defined: RLOO's leave-one-out baseline
# needs 2 rollouts; Dr. GRPO's and the proportional shape's f_q are finite from n = 1
_SMALLEST_N = {"rloo": 2.0, "dr_grpo": 1.0, "proportional": 1.0}


def _objective_inputs(a, n, estimator: str, shapes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``a`` (>= 0) and ``n`` (>= the shape's smallest group size) as float arrays; real numbers
    only (n may be fractional: the relaxed problems evaluate f_q between integers)."""
    checks.choice("estimator", estimator, shapes)
    return checks.nonnegative("a", a), checks.at_least("n", n, _SMALLEST_N[estimator])


def total_objective(a, n, estimator: str) -> float:
    """sum_q f_q(n_q): the objective of (5), (6) and (8)."""
    return float(np.sum(per_prompt_objective(a, n, estimator)))


def marginal_value(a, n, estimator: str) -> np.ndarray:
    """-f_q'(n) = a_q (n - 2)/n^3 (Dr. GRPO) or a_q/(n - 1)^2 (RLOO): the right-hand sides of
    the KKT conditions (7) and (9); equal to lambda* on every interior prompt."""
    a, n = _objective_inputs(a, n, estimator, ESTIMATORS)
    return a * _slope(n, estimator)


def _slope(n, estimator: str) -> np.ndarray:
    """-g'(n): (n - 2)/n^3 (Dr. GRPO, eq. (7)) or 1/(n - 1)^2 (RLOO, eq. (9)); decreasing for n >= 3."""
    n = np.asarray(n, dtype=float)
    if estimator == "dr_grpo":
        return (n - 2.0) / n**3
    if estimator == "proportional":
        return 1.0 / n**2
    return 1.0 / (n - 1.0) ** 2


def _interior_solution(k, estimator: str) -> np.ndarray:
    """The n >= 3 solving -g'(n) = 1/k, i.e. lambda = a_q (-g'(n)) with k = a_q / lambda.

    RLOO (9): n = 1 + sqrt(k). Dr. GRPO (7): n^3 - k n + 2k = 0, whose largest real root
    is n = 2 sqrt(k/3) cos(arccos(-3 sqrt(3/k)) / 3) for k >= 27 (three real roots; k = 27 gives
    the double root at n = 3, the edge of the convex region). Closed form, no iteration.
    """
    k = np.asarray(k, dtype=float)
    if estimator == "rloo":
        return 1.0 + np.sqrt(k)
    if estimator == "proportional":
        return np.sqrt(k)
    k = np.maximum(k, 27.0)
    return 2.0 * np.sqrt(k / 3.0) * np.cos(np.arccos(np.clip(-3.0 * np.sqrt(3.0 / k), -1.0, 1.0)) / 3.0)


def kkt_allocation(a, lam: float, lower: float, upper: float, estimator: str) -> np.ndarray:
    """n_q*(lambda) of Theorem 5.1, eq. (7) (Dr. GRPO) and Theorem 5.2, eq. (9) (RLOO)."""
    return _kkt_log(np.asarray(a, dtype=float), np.log(lam), lower, upper, estimator)


def _kkt_log(a: np.ndarray, log_lam: float, lower: float, upper: float, estimator: str) -> np.ndarray:
    """n_q*(lambda) from log lambda; k = a/lambda is formed in log space so that weights
    near the floating-point underflow (p_hat ~ 1e-300) stay exact."""
    positive = a > 0
    with np.errstate(over="ignore"):  # k = inf means "at U", which the clip gives
        k = np.exp(np.log(np.where(positive, a, 1.0)) - log_lam)
    n = _interior_solution(k, estimator)
    return np.clip(np.where(positive, n, lower), lower, upper)


# --- continuous relaxation ------------------------------------------------------------------


def relaxed_allocation(a, budget, lower, upper, estimator: str) -> np.ndarray:
    """The minimiser of the continuous relaxation (6) or (8) (Theorems 5.1 and 5.2).

    lambda* solves S(lambda) = sum_q n_q*(lambda) = C. S is continuous and non-increasing;
    it is constant (= B L) above the largest breakpoint a_q (-g'(L)) and (= B U) below the
    smallest a_q (-g'(U)). Brent's method on log lambda between those breakpoints finds the
    root to floating-point accuracy (scipy.optimize.brentq). When some a_q = 0 the minimiser
    of (6)/(8) is not unique (those prompts are indifferent); the allocation that gives them
    L and the rest to the others is returned, and their share of any leftover (when the
    positive-weight prompts are all at U) is split evenly.
    """
    checks.choice("estimator", estimator, ESTIMATORS)
    return _relaxed(*check_problem(a, budget, lower, upper), estimator)


def _relaxed(a: np.ndarray, budget, lower, upper, estimator: str) -> np.ndarray:
    """:func:`relaxed_allocation` for any shape of ``_SHAPES``, on validated input."""
    b = a.size
    positive = a > 0
    if budget in (b * lower, b * upper):  # a single feasible point
        return np.full(b, budget / b)
    if not positive.any():  # every prompt indifferent: the even split is one minimiser
        return np.full(b, budget / b)
    n_pos = positive.sum()
    target = budget - lower * (b - n_pos)  # budget left for the positive-weight prompts
    if target >= n_pos * upper:  # every positive prompt at U; the indifferent ones share the rest
        n = np.where(positive, float(upper), float(lower))
        return n if target == n_pos * upper else _fill_evenly(n, ~positive, budget)
    a_pos = a[positive]
    lo = np.log(a_pos.min()) + np.log(_slope(upper, estimator))
    hi = np.log(a_pos.max()) + np.log(_slope(lower, estimator))

    def excess(log_lam: float) -> float:
        return _kkt_log(a_pos, log_lam, lower, upper, estimator).sum() - target

    if excess(lo) <= 0:  # the budget puts every positive-weight prompt at U
        log_lam = lo
    elif excess(hi) >= 0:  # ... or at L
        log_lam = hi
    else:
        log_lam = optimize.brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
    n = np.full(b, float(lower))
    n[positive] = _kkt_log(a_pos, log_lam, lower, upper, estimator)
    return _close_budget(n, positive, budget, lower, upper)


def _close_budget(n: np.ndarray, free: np.ndarray, budget, lower, upper) -> np.ndarray:
    """Remove the last floating-point residual of sum n = C on the interior coordinates
    among ``free``. Near n = 3 the Dr. GRPO root is a double root, so n(lambda) is only
    sqrt(eps)-accurate there; the correction is of that size at most."""
    interior = free & (n > lower) & (n < upper)
    if interior.any():
        n[interior] += (budget - n.sum()) / interior.sum()
    return np.clip(n, lower, upper)


def _fill_evenly(n: np.ndarray, who: np.ndarray, budget: float) -> np.ndarray:
    """Spread budget - sum(n) evenly over the prompts in ``who`` (the indifferent ones)."""
    n = n.copy()
    n[who] += (budget - n.sum()) / who.sum()
    return n


# --- integer allocation -------------------------------------------------------------------


def _unit_gains(lower: int, upper: int, estimator: str) -> np.ndarray:
    """g(n) - g(n+1) for n = L..U-1: the marginal gain per unit of weight (non-increasing)."""
    return _log_unit_gains(lower, upper, estimator)[0]


@functools.lru_cache(maxsize=64)
def _log_unit_gains(lower: int, upper: int, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """(g(n) - g(n+1), its log) for n = L..U-1, read-only: a function of the bounds alone, which
    repeat from step to step, so computed once per (L, U, shape)."""
    g = _G[estimator](np.arange(lower, upper + 1, dtype=float))
    unit = g[:-1] - g[1:]
    log_unit = np.log(unit)
    unit.flags.writeable = log_unit.flags.writeable = False
    return unit, log_unit


def _take_largest(scores: np.ndarray, start: np.ndarray, units: int, lower: int) -> np.ndarray:
    """Add ``units`` rollouts to ``start`` by taking the ``units`` largest marginal gains.

    ``scores[q, j]`` is prompt q's gain (or any increasing transform of it) from the rollout
    that takes it from n = lower + j to n + 1, for n = L..U-1; each row must be non-increasing
    (discrete convexity). Slots below ``start_q`` are excluded. Vectorised: the ``units``-th
    largest score is found by np.partition (linear time), every score above it is taken, and
    the scores equal to it are taken in prompt-major order, so ties go to the lower prompt
    index and, within a prompt, to the smaller n: the order in which a one-unit-at-a-time
    argmax takes them. Exact because each row is non-increasing.
    """
    start = start.astype(np.int64)
    if units == 0:
        return start
    skipped = start - lower
    if skipped.any():  # n >= start_q only
        scores = np.where(np.arange(scores.shape[1])[None, :] >= skipped[:, None], scores, -np.inf)
    gains = scores.ravel()
    threshold = np.partition(gains, gains.size - units)[gains.size - units]
    counts = np.count_nonzero(scores > threshold, axis=1)
    ties = np.flatnonzero(gains == threshold)[: units - int(counts.sum())]
    return start + counts + np.bincount(ties // scores.shape[1], minlength=scores.shape[0])


def _log_gain_scores(a: np.ndarray, lower: int, upper: int, estimator: str) -> np.ndarray:
    """log(a_q d(n)) for n = L..U-1, the ranking scores of problem (5).

    Ranked in log space: a_q d(n) underflows to 0 for subnormal a_q and would tie with
    a_q = 0. A zero weight ranks below every positive one (-max float) but above the slots
    that cannot be taken (-inf), so leftover units still land on allowed slots only.
    """
    log_unit = _log_unit_gains(lower, upper, estimator)[1]
    with np.errstate(divide="ignore"):
        scores = np.log(a)[:, None] + log_unit[None, :]
    if not a.min() > 0:
        scores[a == 0] = -np.finfo(float).max
    return scores


def integer_allocation(a, budget, lower, upper, estimator: str) -> np.ndarray:
    """The exact optimum of the integer problem (5) (marginal-gain threshold; see module docstring)."""
    checks.choice("estimator", estimator, ESTIMATORS)
    a, budget, lower, upper = check_problem(a, budget, lower, upper)
    start = np.full(a.size, lower, dtype=np.int64)
    if upper == lower:
        return start
    scores = _log_gain_scores(a, lower, _largest_count(a.size, budget, lower, upper), estimator)
    return _take_largest(scores, start, budget - lower * a.size, lower)


def round_allocation(n_relaxed, a, budget, lower, upper, estimator: str) -> np.ndarray:
    """Algorithm 2 (App. D): floor the relaxed solution, then give the remaining budget one
    unit at a time to the prompt with the largest decrease f_q(n) - f_q(n + 1), n < U.

    Each prompt's decreases shrink as it grows (discrete convexity), so the sequence of
    one-at-a-time argmax choices is exactly the set of the C_rem largest candidate
    decreases above the floors, which :func:`_take_largest` selects without a per-unit loop.
    Ties go to the lower prompt index, as an argmax over q in order does.
    """
    checks.choice("estimator", estimator, ESTIMATORS)
    return _round(n_relaxed, *check_problem(a, budget, lower, upper), estimator)


def _round(n_relaxed, a: np.ndarray, budget: int, lower: int, upper: int, estimator: str) -> np.ndarray:
    """:func:`round_allocation` for any shape of ``_SHAPES``, on validated input."""
    n_relaxed = checks.as_float_array("n_relaxed", n_relaxed)
    if n_relaxed.shape != a.shape:
        raise ValueError(f"n_relaxed must have the shape of a {a.shape}; got {n_relaxed.shape}")
    floors = np.clip(np.floor(n_relaxed + 1e-9), lower, upper).astype(np.int64)  # 1e-9: 7.9999999 from the root is 8
    remaining = budget - int(floors.sum())
    if remaining < 0:
        raise ValueError(f"n_relaxed sums above the budget after flooring ({floors.sum()} > {budget})")
    if upper == lower:
        return floors
    scores = _log_gain_scores(a, lower, _largest_count(a.size, budget, lower, upper), estimator)
    return _take_largest(scores, floors, remaining, lower)


def _paper_allocation(a, budget, lower, upper, estimator: str) -> np.ndarray:
    """Theorem 5.1/5.2's relaxed minimiser rounded by Algorithm 2."""
    relaxed = relaxed_allocation(a, budget, lower, upper, estimator)
    return round_allocation(relaxed, a, budget, lower, upper, estimator)


@dataclass(frozen=True)
class Method:
    """How problem (5) is solved: ``solve(a, budget, lower, upper, estimator)``, and whether it
    gives whole rollout counts (what a trainer can sample)."""

    solve: Callable
    integer: bool


# method -> how :func:`allocate` solves (5)
METHODS = {
    "exact": Method(integer_allocation, integer=True),  # the integer optimum of (5)
    "paper": Method(_paper_allocation, integer=True),  # Theorem 5.1/5.2, then Algorithm 2
    "relaxed": Method(relaxed_allocation, integer=False),  # the real-valued minimiser
}


def allocate(a, budget, lower, upper, estimator: str, method: str = "exact") -> np.ndarray:
    """The allocation the trainer calls, by :data:`METHODS`' ``method``."""
    checks.choice("method", method, tuple(METHODS))
    return METHODS[method].solve(a, budget, lower, upper, estimator)


# --- baselines (App. C.1) ---------------------------------------------------------------


# The baselines need no convexity beyond that of g = 1/n: their smallest L is the 2 rollouts a
# group needs for a leave-one-out baseline.
BASELINE_MIN_LOWER = 2
BASELINE_WHY = "a group needs 2 rollouts for its baseline"


def uniform_allocation(n_prompts: int, budget, lower, upper) -> np.ndarray:
    """floor(C/B) rollouts each; the C mod B left over go to the first prompts (GRPO's default)."""
    b = checks.integer("n_prompts", n_prompts)
    if b < 1:
        raise ValueError(f"n_prompts must be >= 1; got {b}")
    budget, _, _ = _check_box(b, budget, lower, upper, BASELINE_MIN_LOWER, BASELINE_WHY)
    n = np.full(b, budget // b, dtype=np.int64)
    n[: budget - int(n.sum())] += 1
    return n


def proportional_allocation(weights, budget, lower, upper) -> np.ndarray:
    """n_q proportional to w_q, normalised to the budget within [L, U], then rounded (App. C.1).

    VIP's "normalize to meet the global budget and per-prompt bounds" is read as: the
    box-clipped proportional split n_q = clip(tau w_q, L, U) with sum n = C, which is the
    minimiser of sum w_q^2 / n_q, rounded by Algorithm 2 on that same objective.
    """
    w = checks.nonnegative("weights", weights)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array (one per prompt); got shape {w.shape}")
    budget, lower, upper = _check_box(w.size, budget, lower, upper, BASELINE_MIN_LOWER, BASELINE_WHY)
    a = w**2
    return _round(_relaxed(a, budget, lower, upper, "proportional"), a, budget, lower, upper, "proportional")


def inverse_accuracy_allocation(acc, budget, lower, upper, eps: float = 1e-3) -> np.ndarray:
    """App. C.1: weights w_q = 1 - acc_q + eps (more rollouts to prompts answered less often)."""
    acc = checks.probability("acc", acc)
    return proportional_allocation(1.0 - acc + eps, budget, lower, upper)


def inverse_variance_allocation(var, budget, lower, upper, eps: float = 1e-3) -> np.ndarray:
    """App. C.1: weights w_q = 1 / (var_q + eps) (more rollouts to prompts with less answer variance)."""
    var = checks.nonnegative("var", var)
    return proportional_allocation(1.0 / (var + eps), budget, lower, upper)
