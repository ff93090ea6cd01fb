"""The released code's allocation rule (claim V13): theory.allocation_released.released_vip_allocation."""

import itertools

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.allocation import integer_allocation, success_variance_weights, uniform_allocation
from theory.allocation_released import (
    RELEASED_GAMMA,
    released_objective,
    released_relaxed_allocation,
    released_terms,
    released_vip_allocation,
)

estimators = st.sampled_from(["dr_grpo", "rloo"])


@st.composite
def released_problems(draw, max_b=30, lower=(4, 4)):
    b = draw(st.integers(2, max_b))
    low = draw(st.integers(*lower))
    upper = draw(st.integers(low, 32))
    budget = draw(st.integers(b * low, b * upper))
    p = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=b, max_size=b)))
    return p, budget, low, upper


def literal_released_rule(p, budget, lower, upper, estimator):
    """Steps 2-4 of the released rule written as the loops the docstring describes."""
    a, _ = released_terms(p, estimator)
    if np.all(np.clip(p, 1e-6, 1 - 1e-6) == np.clip(p, 1e-6, 1 - 1e-6)[0]):
        return uniform_allocation(p.size, budget, lower, upper)
    n = np.floor(released_relaxed_allocation(p, budget, lower, upper, estimator)).astype(np.int64)

    def h(m):
        return (m + 3.0) / (m + 4.0) ** 2

    for _ in range(budget - n.sum()):
        n[np.argmax(np.where(n < upper, a * (h(n) - h(n + 1)), -np.inf))] += 1
    freed = int(n[n < 4].sum())
    n[n < 4] = 0
    for _ in range(freed):
        candidates = np.where((n > 0) & (n < upper), n, -1)
        if candidates.max() < 0:
            break
        n[np.argmax(candidates)] += 1
    return n


@given(released_problems(), estimators)
@settings(max_examples=120, deadline=None)
def test_released_rule_is_feasible(problem, estimator):
    p, budget, lower, upper = problem
    n = released_vip_allocation(p, budget, lower, upper, estimator)
    assert n.dtype == np.int64
    assert n.sum() == budget and n.min() >= lower and n.max() <= upper


@given(released_problems(), estimators, st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_released_rule_is_permutation_equivariant(problem, estimator, random):
    # Only on distinct p: p and 1 - p share a = p(1 - p), so the rounding's ties between
    # them go by index. Monotonicity in a does not hold by design: the gamma term (see
    # test_gamma_term_moves_rollouts_to_hard_prompts).
    p, budget, lower, upper = problem
    perm = np.array(random.sample(range(p.size), p.size))
    a, _ = released_terms(p, estimator)
    for rounding in ("released", "exact"):
        n = released_vip_allocation(p, budget, lower, upper, estimator, rounding=rounding)
        n_perm = released_vip_allocation(p[perm], budget, lower, upper, estimator, rounding=rounding)
        if len(np.unique(a)) == p.size:
            np.testing.assert_array_equal(n_perm, n[perm])


@given(released_problems(lower=(3, 5)), estimators)
@settings(max_examples=120, deadline=None)
def test_vectorised_rule_equals_the_literal_loops(problem, estimator):
    p, budget, lower, upper = problem
    np.testing.assert_array_equal(
        released_vip_allocation(p, budget, lower, upper, estimator),
        literal_released_rule(p, budget, lower, upper, estimator),
    )


@given(released_problems(), estimators)
@settings(max_examples=120, deadline=None)
def test_relaxed_step_satisfies_its_kkt_conditions(problem, estimator):
    p, budget, lower, upper = problem
    a, c = released_terms(p, estimator)
    n = released_relaxed_allocation(p, budget, lower, upper, estimator)
    assert n.sum() == pytest.approx(budget, abs=1e-8)
    slope = (n - 2) / n**3 if estimator == "dr_grpo" else 1 / (n - 1) ** 2
    mu = a * slope + c  # equal on interior prompts, <= at L, >= at U
    interior = (n > lower + 1e-6) & (n < upper - 1e-6)
    if interior.any():
        level = np.median(mu[interior])
        np.testing.assert_allclose(mu[interior], level, rtol=1e-6, atol=1e-12)
        assert np.all(mu[n <= lower + 1e-9] <= level * (1 + 1e-6) + 1e-12)
        assert np.all(mu[n >= upper - 1e-9] >= level * (1 - 1e-6) - 1e-12)


def test_relaxed_step_matches_cvxpy_for_rloo():
    rng = np.random.default_rng(3)
    for law in [(1.0, 1.0), (0.3, 0.3), (1.0, 5.0)]:
        p = rng.beta(*law, size=64)
        a, c = released_terms(p, "rloo")
        ours = released_relaxed_allocation(p, 512, estimator="rloo")
        x = cp.Variable(64)
        problem = cp.Problem(cp.Minimize(a @ cp.inv_pos(x - 1) - c @ x), [cp.sum(x) == 512, x >= 4, x <= 32])
        problem.solve(solver=cp.CLARABEL)
        assert released_objective(p, ours, "rloo") == pytest.approx(problem.value, rel=1e-7)


@given(released_problems(max_b=4), estimators)
@settings(max_examples=60, deadline=None)
def test_exact_rounding_is_the_integer_optimum(problem, estimator):
    p, budget, lower, upper = problem
    upper = min(upper, lower + 6)
    budget = min(budget, p.size * upper)
    exact = released_vip_allocation(p, budget, lower, upper, estimator, rounding="exact")
    grid = [x for x in itertools.product(range(lower, upper + 1), repeat=p.size) if sum(x) == budget]
    best = min(released_objective(p, x, estimator) for x in grid)
    assert released_objective(p, exact, estimator) <= best + 1e-12 * max(1.0, abs(best))
    assert (
        released_objective(p, exact, estimator)
        <= released_objective(p, released_vip_allocation(p, budget, lower, upper, estimator), estimator) + 1e-15
    )


def test_without_gamma_the_exact_rounding_is_the_paper_optimum():
    rng = np.random.default_rng(4)
    p = rng.uniform(size=100)
    for est in ("dr_grpo", "rloo"):
        ours = released_vip_allocation(p, 1200, estimator=est, gamma=0.0, rounding="exact")
        paper = integer_allocation(success_variance_weights(np.clip(p, 1e-6, 1 - 1e-6)), 1200, 4, 32, est)
        np.testing.assert_array_equal(ours, paper)


def test_gamma_term_moves_rollouts_to_hard_prompts():
    p = np.array([1e-9, 0.5, 0.5, 0.9])
    with_gamma = released_vip_allocation(p, 40, estimator="dr_grpo")
    without = released_vip_allocation(p, 40, estimator="dr_grpo", gamma=0.0)
    assert with_gamma[0] > without[0]
    assert RELEASED_GAMMA == {"rloo": 7e-4, "dr_grpo": 4e-4}


def test_equal_probabilities_give_the_uniform_split():
    np.testing.assert_array_equal(released_vip_allocation(np.full(5, 0.3), 27), [6, 6, 5, 5, 5])
    # distinct values that the clip to [1e-6, 1 - 1e-6] makes equal count as equal
    np.testing.assert_array_equal(released_vip_allocation(np.array([0.0, 1e-9, 1e-8]), 13), [5, 4, 4])


def test_dropping_moves_rollouts_to_the_largest_prompts():
    # lower = 3: the easiest prompts sit at 3 and are dropped; their rollouts go to the largest.
    p = np.array([0.5, 0.45, 0.999, 0.998, 0.3])
    n = released_vip_allocation(p, 30, lower=3, upper=10, estimator="rloo")
    assert n.sum() == 30
    assert np.all((n == 0) | (n >= 4))
    assert (n == 0).sum() >= 1


def test_unplaceable_dropped_rollouts_stay_unspent():
    # every kept prompt at U = 4 leaves nowhere to put the dropped prompt's 3 rollouts
    n = released_vip_allocation(np.array([0.5, 0.5, 1.0]), 11, lower=3, upper=4, estimator="rloo")
    np.testing.assert_array_equal(n, [4, 4, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"p_hat": [0.2, 1.5], "budget": 8}, "p_hat"),
        ({"p_hat": [0.2, np.nan], "budget": 8}, "p_hat"),
        ({"p_hat": [0.2, 0.4], "budget": 7}, "budget"),
        ({"p_hat": [0.2, 0.4], "budget": 8, "lower": 2}, "lower"),
        ({"p_hat": [0.2, 0.4], "budget": 8, "gamma": -1.0}, "gamma"),
        ({"p_hat": [0.2, 0.4], "budget": 8, "rounding": "nearest"}, "rounding"),
        ({"p_hat": [0.2, 0.4], "budget": 8, "estimator": "grpo"}, "estimator"),
    ],
)
def test_released_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        released_vip_allocation(**kwargs)
