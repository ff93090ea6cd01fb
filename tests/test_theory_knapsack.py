"""Knapsack RL's allocation (theory.allocation_knapsack.knapsack_allocation, theory/allocation_knapsack.py):
the knapsack optimum, the fallback, feasibility, refusals, and the rule in the trainer."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_registries import SIZES, _step_metrics
from theory.allocation import allocate, success_variance_weights, uniform_allocation
from theory.allocation_knapsack import (
    KNAPSACK_MIN_N,
    fallback_cost,
    knapsack_allocation,
    knapsack_value,
    log_gain_scores,
)
from theory.allocation_rules import ALLOCATION_RULES
from trainer.config import load_config


def brute_force_best(p, budget, lower, upper) -> float:
    """The largest knapsack value over every allocation with sum n = C and L <= n <= U."""
    counts = itertools.product(range(lower, upper + 1), repeat=len(p))
    return max(knapsack_value(p, np.array(n), lower) for n in counts if sum(n) == budget)


@st.composite
def small_problems(draw):
    b = draw(st.integers(1, 4))
    lower = draw(st.integers(2, 3))
    upper = draw(st.integers(lower, lower + 4))
    budget = draw(st.integers(b * lower, b * upper))
    values = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.02, 0.98))
    p = np.array(draw(st.lists(values, min_size=b, max_size=b)))
    return p, budget, lower, upper


@given(small_problems())
@settings(max_examples=80, deadline=None)
def test_without_fallback_the_rule_reaches_the_brute_force_knapsack_optimum(problem):
    p, budget, lower, upper = problem
    n = knapsack_allocation(p, budget, lower, upper, fallback=False)
    assert knapsack_value(p, n, lower) == pytest.approx(brute_force_best(p, budget, lower, upper), rel=1e-12, abs=0)


@given(small_problems())
@settings(max_examples=80, deadline=None)
def test_with_fallback_the_effective_prompts_get_the_knapsack_optimum_of_their_share(problem):
    """The fallback decides how many rollouts the effective prompts (0 < p < 1) share; among
    every split of that many within the bounds, the rule's has the largest value."""
    p, budget, lower, upper = problem
    n = knapsack_allocation(p, budget, lower, upper)
    eff = (p > 0) & (p < 1)
    assert n.sum() == budget and n.min() >= lower and n.max() <= upper
    if eff.any():
        best = brute_force_best(p[eff], int(n[eff].sum()), lower, upper)
        assert knapsack_value(p[eff], n[eff], lower) == pytest.approx(best, rel=1e-12, abs=0)


def test_the_marginal_gains_are_the_values_differences_and_decrease():
    """exp(log_gain_scores) = V(k) - V(k-1) with V(0) = 0; D(1) > D(2) > ... (the concavity
    the greedy needs), checked on a grid of p and min_n."""
    for lower in (2, 3, 5):
        p = np.array([1e-3, 0.05, 0.3, 0.5, 0.7, 0.95, 0.999])
        scores = log_gain_scores(p, lower, 12)
        values = [[knapsack_value([q], [lower + k], lower) for k in range(13)] for q in p]
        np.testing.assert_allclose(np.exp(scores), np.diff(values, axis=1), rtol=1e-9)
        assert np.all(np.diff(scores, axis=1) < 0)


def test_the_released_codes_toy_example():
    """p = [.5, .1, 0, 1, .9, .05, .3], 8 rollouts each, min_n 2, max_n 128: the counts that
    sampling_budget_by_knapsack (liziniu/KnapsackRL @ ca5d5f5) returns for these prompts."""
    p = [0.5, 0.1, 0.0, 1.0, 0.9, 0.05, 0.3]
    np.testing.assert_array_equal(knapsack_allocation(p, 56, 2, 128), [7, 18, 2, 2, 3, 13, 11])


def test_fallback_moves_the_surplus_to_the_unsolved_prompts():
    """p = 0.5 costs floor(ln 0.1 / ln 0.5) = 3 < R = 12: the knapsack places 3, the other 9
    go evenly to the two p = 0 prompts (5 and 4, the remainder to the first); p = 1 keeps 2."""
    assert fallback_cost(np.array([0.5]), 0.9)[0] == pytest.approx(np.log(0.1) / np.log(0.5))
    np.testing.assert_array_equal(knapsack_allocation([0.5, 0.0, 0.0, 1.0], 20, 2, 8), [5, 7, 6, 2])
    # negative control: without the fallback the knapsack takes what the bounds allow
    np.testing.assert_array_equal(knapsack_allocation([0.5, 0.0, 0.0, 1.0], 20, 2, 8, fallback=False), [8, 5, 5, 2])


def test_fallback_without_unsolved_prompts_goes_to_the_solved_ones_and_respects_upper():
    # no p = 0: the surplus goes to the p = 1 prompts (the code's "every non-effective prompt")
    np.testing.assert_array_equal(knapsack_allocation([0.5, 1.0, 1.0], 18, 2, 8), [5, 7, 6])
    # the p = 0 prompt is full at U = 6: the rest of the surplus goes to the p = 1 prompt, then the knapsack
    np.testing.assert_array_equal(knapsack_allocation([0.5, 0.0, 1.0], 18, 2, 6), [6, 6, 6])


def test_every_prompt_effective_and_cheap_keeps_the_budget_in_the_knapsack():
    """The released code fails here (no fallback recipient, its budget assertion); the rule
    gives the knapsack the whole budget, as without the fallback."""
    p = np.full(8, 0.5)
    n = knapsack_allocation(p, 64, 2, 16)
    np.testing.assert_array_equal(n, knapsack_allocation(p, 64, 2, 16, fallback=False))
    assert n.sum() == 64 and n.min() >= 2 and n.max() <= 16


@pytest.mark.parametrize(
    "p, budget, expected",
    [
        ([0.0, 1.0, 0.0, 1.0], 8, [2, 2, 2, 2]),  # C = B L: the single feasible point
        ([0.0, 1.0, 0.0, 1.0], 15, [6, 2, 5, 2]),  # no effective prompt: all to p = 0, evenly
        ([1.0, 1.0, 1.0], 10, [4, 3, 3]),  # only p = 1: uniform, as the code's reset to n
        ([0.0, 1.0], 16, [8, 8]),  # C = B U
    ],
)
def test_prompts_with_p_in_0_or_1(p, budget, expected):
    np.testing.assert_array_equal(knapsack_allocation(p, budget, 2, 8), expected)


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
    st.integers(2, 6),
    st.integers(0, 40),
    st.floats(0.05, 0.99),
    st.booleans(),
    st.data(),
)
@settings(max_examples=150, deadline=None)
def test_allocations_are_feasible(p, lower, extra, alpha, fallback, data):
    upper = lower + extra
    budget = data.draw(st.integers(len(p) * lower, len(p) * upper))
    n = knapsack_allocation(np.array(p), budget, lower, upper, alpha, fallback)
    assert n.dtype == np.int64 and n.sum() == budget and n.min() >= lower and n.max() <= upper


def test_extreme_success_rates_keep_their_order():
    """p_hat near 0 or 1 (the GP's p_hat) gives finite costs and distinct gains: a prompt
    with p = 1e-200 still ranks above one with p = 1e-250 (linear-space gains are both 0)."""
    p = np.array([1e-250, 1e-200, 1 - 1e-12, 1e-300, 5e-324])
    assert np.all(fallback_cost(p, 0.9)[:4] > 1e11) and fallback_cost(p, 0.9)[4] == np.inf
    assert np.all(np.isfinite(log_gain_scores(p, 2, 3)))
    np.testing.assert_array_equal(knapsack_allocation(p[[0, 1, 3]], 7, 2, 8), [2, 3, 2])


def test_uniform_and_vip_score_lower_than_the_knapsack_under_its_objective():
    """Negative control: the objective separates rules. On these prompts both uniform and VIP's
    RLOO optimum are feasible and strictly worse than the knapsack, which is the brute-force best."""
    p = np.array([0.05, 0.2, 0.5, 0.9])
    budget, lower, upper = 20, 3, 8
    best = knapsack_value(p, knapsack_allocation(p, budget, lower, upper, fallback=False), lower)
    assert best == pytest.approx(brute_force_best(p, budget, lower, upper), rel=1e-12)
    for other in (
        uniform_allocation(4, budget, lower, upper),
        allocate(success_variance_weights(p), budget, lower, upper, "rloo"),
    ):
        assert knapsack_value(p, other, lower) < best - 1e-4


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([0.5, 1.2], 8), {}, r"p_hat must lie in \[0, 1\]"),
        (([0.5, np.nan], 8), {}, r"p_hat must be finite"),
        ((np.full((2, 2), 0.5), 16), {}, r"p_hat must be a non-empty 1-D array"),
        (([], 0), {}, r"p_hat must be a non-empty 1-D array"),
        (([0.5, 0.5], 8, 1, 8), {}, r"lower must be >= 2 \(Knapsack RL's min_n"),
        (([0.5, 0.5], 8, 4, 3), {}, r"upper must be >= lower = 4; got 3"),
        (([0.5, 0.5], 3, 2, 8), {}, r"budget must lie in \[B\*lower, B\*upper\] = \[4, 16\]"),
        (([0.5, 0.5], 8.5, 2, 8), {}, r"budget must be a finite integer; got 8.5"),
        (([0.5, 0.5], 8), {"alpha": 1.0}, r"alpha must be a number in \(0, 1\) .*; got 1.0"),
        (([0.5, 0.5], 8), {"alpha": float("nan")}, r"alpha must be a number in \(0, 1\) .*; got nan"),
        (([0.5, 0.5], 8), {"alpha": "0.9"}, r"alpha must be a number in \(0, 1\) .*; got '0.9'"),
        (([0.5, 0.5], 8), {"alpha": None}, r"alpha must be a number in \(0, 1\) .*; got None"),
        (([0.5, 0.5], 8), {"alpha": [0.9]}, r"alpha must be a number in \(0, 1\) .*; got \[0.9\]"),
        (([0.5, 0.5], 8), {"fallback": "no"}, r"fallback must be True or False; got 'no'"),
        ((np.full(200_000, 0.5), 20_000_000, 2, 1000), {}, r"upper: .* marginal gains exceed the limit"),
    ],
)
def test_bad_input_is_refused_by_name(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        knapsack_allocation(*args, **kwargs)


def test_knapsack_value_refuses_counts_below_min_n_or_of_another_shape():
    with pytest.raises(ValueError, match="n must be >= 2"):
        knapsack_value([0.5, 0.5], [1, 3], 2)
    with pytest.raises(ValueError, match=r"n must have the shape of p_hat \(2,\)"):
        knapsack_value([0.5, 0.5], [2, 3, 4], 2)


def test_the_rule_is_registered_with_knapsack_rls_minimum():
    rule = ALLOCATION_RULES["knapsack"]
    assert rule.uses_p_hat and rule.min_lower == KNAPSACK_MIN_N == 2 and "2509.25849" in rule.summary
    p = np.array([0.1, 0.5, 0.0, 1.0])
    np.testing.assert_array_equal(rule.allocate(p, 20, 2, 8, "rloo"), knapsack_allocation(p, 20, 2, 8))


def test_the_trainer_refuses_min_rollouts_below_2_with_knapsack():
    assert load_config(None, ["allocation=knapsack", "min_rollouts=2"]).min_rollouts == 2
    with pytest.raises(ValueError, match=r"min_rollouts \(L\) must be >= 2"):
        load_config(None, ["allocation=knapsack", "min_rollouts=1"])


def test_knapsack_trains_two_steps():
    rows = _step_metrics(allocation="knapsack", min_rollouts=2)
    budget, lower, upper = SIZES["budget"], 2, SIZES["max_rollouts"]
    for row in rows:
        assert np.isfinite(row["loss"])
        assert sum(int(n) * c for n, c in row["allocation/histogram"].items()) == budget
        assert lower <= row["allocation/min"] <= row["allocation/max"] <= upper
