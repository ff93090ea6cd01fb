"""Properties of theory/allocation.py (VIP Theorems 5.1/5.2, Algorithm 2, the integer problem (5))."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.allocation import (
    MAX_GAIN_SLOTS,
    allocate,
    integer_allocation,
    inverse_accuracy_allocation,
    inverse_variance_allocation,
    kkt_allocation,
    marginal_value,
    per_prompt_objective,
    relaxed_allocation,
    round_allocation,
    success_variance_weights,
    total_objective,
    uniform_allocation,
)
from theory.allocation_released import released_vip_allocation

estimators = st.sampled_from(["dr_grpo", "rloo"])


@st.composite
def problems(draw, max_b=40):
    b = draw(st.integers(1, max_b))
    lower = draw(st.integers(3, 8))
    upper = draw(st.integers(lower, lower + 40))
    budget = draw(st.integers(b * lower, b * upper))
    p = draw(st.lists(st.floats(0.0, 1.0), min_size=b, max_size=b))
    return success_variance_weights(np.array(p)), budget, lower, upper


@given(problems(), estimators, st.sampled_from(["exact", "paper"]))
@settings(max_examples=150, deadline=None)
def test_integer_allocations_are_feasible(problem, estimator, method):
    a, budget, lower, upper = problem
    n = allocate(a, budget, lower, upper, estimator, method)
    assert n.dtype == np.int64
    assert n.sum() == budget and n.min() >= lower and n.max() <= upper


@given(problems(), estimators)
@settings(max_examples=150, deadline=None)
def test_relaxed_is_feasible_and_satisfies_kkt(problem, estimator):
    a, budget, lower, upper = problem
    n = relaxed_allocation(a, budget, lower, upper, estimator)
    assert n.sum() == pytest.approx(budget, abs=1e-8)
    assert n.min() >= lower - 1e-12 and n.max() <= upper + 1e-12
    # KKT (7)/(9): the marginal value -f'(n) is equal on interior prompts, no larger at L, no smaller at U.
    slope = marginal_value(a, n, estimator)
    interior = (n > lower + 1e-6) & (n < upper - 1e-6) & (a > 0)
    if interior.sum() >= 1:
        lam = np.median(slope[interior])
        np.testing.assert_allclose(slope[interior], lam, rtol=1e-6)
        assert np.all(slope[(n <= lower + 1e-9) & (a > 0)] <= lam * (1 + 1e-6))
        assert np.all(slope[n >= upper - 1e-9] >= lam * (1 - 1e-6))


@given(problems(), estimators)
@settings(max_examples=150, deadline=None)
def test_exact_no_worse_than_paper_and_relaxed_no_worse_than_exact(problem, estimator):
    a, budget, lower, upper = problem
    exact = total_objective(a, integer_allocation(a, budget, lower, upper, estimator), estimator)
    paper = total_objective(a, allocate(a, budget, lower, upper, estimator, "paper"), estimator)
    relaxed = total_objective(a, relaxed_allocation(a, budget, lower, upper, estimator), estimator)
    assert exact <= paper + 1e-12 * max(1.0, paper)
    assert relaxed <= exact + 1e-9 * max(1.0, exact)


@given(problems(max_b=6), estimators)
@settings(max_examples=60, deadline=None)
def test_exact_matches_brute_force(problem, estimator):
    a, budget, lower, upper = problem
    upper = min(upper, lower + 5)
    budget = min(budget, a.size * upper)
    best = min(
        total_objective(a, np.array(x), estimator)
        for x in itertools.product(range(lower, upper + 1), repeat=a.size)
        if sum(x) == budget
    )
    got = total_objective(a, integer_allocation(a, budget, lower, upper, estimator), estimator)
    assert got == pytest.approx(best, rel=1e-12, abs=1e-15)


@given(problems(), estimators, st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_permutation_equivariance(problem, estimator, random):
    a, budget, lower, upper = problem
    perm = np.array(random.sample(range(a.size), a.size))
    n = integer_allocation(a, budget, lower, upper, estimator)
    n_perm = integer_allocation(a[perm], budget, lower, upper, estimator)
    # equal objective (ties may be broken differently), and exactly equivariant on distinct weights
    assert total_objective(a[perm], n_perm, estimator) == pytest.approx(
        total_objective(a, n, estimator), rel=1e-12, abs=1e-15
    )
    if len(np.unique(a)) == a.size:
        np.testing.assert_array_equal(n_perm, n[perm])
    relaxed = relaxed_allocation(a, budget, lower, upper, estimator)
    np.testing.assert_allclose(relaxed_allocation(a[perm], budget, lower, upper, estimator), relaxed[perm], atol=1e-7)


@given(problems(), estimators)
@settings(max_examples=100, deadline=None)
def test_larger_weight_never_gets_fewer_rollouts(problem, estimator):
    a, budget, lower, upper = problem
    larger = a[:, None] > a[None, :]
    for n in (
        integer_allocation(a, budget, lower, upper, estimator),
        relaxed_allocation(a, budget, lower, upper, estimator),
    ):
        assert np.all((n[:, None] >= n[None, :] - 1e-7)[larger])


def test_rloo_interior_closed_form():
    # Theorem 5.2: n = 1 + sqrt(a / lambda) inside the box.
    n = kkt_allocation(np.array([4.0, 1.0]), 0.01, 3, 100, "rloo")
    np.testing.assert_allclose(n, [21.0, 11.0])


def test_dr_grpo_interior_root_solves_eq7():
    a, lam = np.array([1.0, 0.3, 0.05]), 1e-3
    n = kkt_allocation(a, lam, 3, 1000, "dr_grpo")
    np.testing.assert_allclose(a * (n - 2) / n**3, lam, rtol=1e-12)


def test_edge_budgets_and_zero_weights():
    a = np.array([0.0, 0.5, 1.0])
    np.testing.assert_array_equal(integer_allocation(a, 9, 3, 8, "rloo"), [3, 3, 3])
    np.testing.assert_array_equal(integer_allocation(a, 24, 3, 8, "rloo"), [8, 8, 8])
    # a = 0 gets L while others can absorb the budget
    assert integer_allocation(a, 14, 3, 8, "dr_grpo")[0] == 3
    assert relaxed_allocation(a, 14, 3, 8, "dr_grpo")[0] == 3
    # all weights zero: feasible, even in the relaxation
    np.testing.assert_allclose(relaxed_allocation(np.zeros(4), 18, 3, 8, "rloo"), 4.5)
    assert integer_allocation(np.zeros(4), 18, 3, 8, "rloo").sum() == 18


def test_extreme_weight_scales():
    a = np.array([1e-300, 1e-150, 1.0, 1e150])
    for est in ("dr_grpo", "rloo"):
        n = relaxed_allocation(a, 40, 3, 20, est)
        assert n.sum() == pytest.approx(40) and np.all(np.diff(n) >= -1e-9)
        assert integer_allocation(a, 40, 3, 20, est).sum() == 40


def test_algorithm2_rounding_from_floor():
    a = success_variance_weights(np.array([0.5, 0.1, 0.9, 0.3]))
    n = round_allocation(np.array([7.6, 4.2, 4.1, 6.1]), a, 22, 3, 10, "rloo")
    assert n.sum() == 22 and np.all(n >= [7, 4, 4, 6])


def test_per_prompt_objective_values():
    assert per_prompt_objective(2.0, 4, "dr_grpo") == pytest.approx(2 * 3 / 16)
    assert per_prompt_objective(2.0, 4, "rloo") == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.ones(4), 12, 2, 8), r"lower must be >= 3"),
        ((np.ones(4), 12, 5, 4), r"upper must be >= lower"),
        ((np.ones(4), 11, 3, 8), r"budget must lie in \[B\*lower, B\*upper\] = \[12, 32\]"),
        ((np.ones(4), 33, 3, 8), r"budget must lie in"),
        ((np.ones(4), 12.5, 3, 8), r"budget must be a finite integer; got 12.5"),
        ((np.ones(4), float("nan"), 3, 8), r"budget must be a finite integer; got nan"),
        ((np.ones(4), np.inf, 3, 8), r"budget must be a finite integer; got inf"),
        ((np.ones(4), 12, "3", 8), r"lower must be an integer; got '3'"),
        ((np.ones(4), True, 3, 8), r"budget must be an integer; got True"),
        ((np.array([1.0, -1.0]), 8, 3, 8), r"a must be >= 0"),
        ((np.array([1.0, np.nan]), 8, 3, 8), r"a must be finite"),
        ((np.ones((2, 2)), 12, 3, 8), r"a must be a non-empty 1-D array"),
        ((np.ones(0), 0, 3, 8), r"a must be a non-empty 1-D array"),
    ],
)
def test_bad_input(args, match):
    for fn in (integer_allocation, relaxed_allocation):
        with pytest.raises(ValueError, match=match):
            fn(*args, "rloo")


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="method must be one of"):
        allocate(np.ones(3), 12, 3, 8, "rloo", method="greedy")
    with pytest.raises(ValueError, match="estimator must be one of"):
        allocate(np.ones(3), 12, 3, 8, "grpo")
    with pytest.raises(ValueError, match="n_relaxed must have the shape"):
        round_allocation(np.ones(2), np.ones(3), 12, 3, 8, "rloo")
    with pytest.raises(ValueError, match=r"p_hat must lie in \[0, 1\]"):
        success_variance_weights([0.5, 1.2])


@given(problems())
@settings(max_examples=100, deadline=None)
def test_baselines_are_feasible_and_ordered(problem):
    a, budget, lower, upper = problem
    p = 0.5 - 0.5 * np.sqrt(np.clip(1 - a, 0, 1))  # a = 4p(1-p) inverted on p <= 1/2
    allocations = {
        "uniform": uniform_allocation(a.size, budget, lower, upper),
        "inverse-accuracy": inverse_accuracy_allocation(p, budget, lower, upper),
        "inverse-variance": inverse_variance_allocation(a, budget, lower, upper),
    }
    for n in allocations.values():
        assert n.dtype == np.int64 and n.sum() == budget and n.min() >= lower and n.max() <= upper
    assert allocations["uniform"].max() - allocations["uniform"].min() <= 1
    # a larger effective weight (1 - acc + eps, 1/(var + eps) as computed) never gets fewer rollouts
    for rule, w in (("inverse-accuracy", 1.0 - p + 1e-3), ("inverse-variance", 1.0 / (a + 1e-3))):
        n = allocations[rule]
        assert np.all((n[:, None] >= n[None, :])[w[:, None] > w[None, :]]), rule


def test_baseline_bad_input():
    with pytest.raises(ValueError, match=r"acc must lie in \[0, 1\]"):
        inverse_accuracy_allocation([0.5, 1.5], 8, 3, 8)
    with pytest.raises(ValueError, match="var must be >= 0"):
        inverse_variance_allocation([0.5, -1.0], 8, 3, 8)
    with pytest.raises(ValueError, match="budget must lie in"):
        uniform_allocation(4, 100, 3, 8)


def test_fixed_width_bounds_do_not_overflow():
    """uint8 bounds: B*lower = 3*200 overflows uint8 (600 -> 88); the check and the
    allocation compute in Python ints, so the feasible range and the message are right."""
    a = np.array([0.5, 0.2, 0.9])
    with pytest.raises(ValueError, match=r"budget must lie in \[B\*lower, B\*upper\] = \[600, 750\]"):
        allocate(a, np.uint16(12), np.uint8(200), np.uint8(250), "rloo")
    for method in ("exact", "paper"):
        n = allocate(a, np.uint16(700), np.uint8(200), np.uint8(250), "rloo", method)
        np.testing.assert_array_equal(n, allocate(a, 700, 200, 250, "rloo", method))
        assert n.sum() == 700 and n.min() >= 200 and n.max() <= 250
    np.testing.assert_array_equal(uniform_allocation(3, np.uint16(700), np.uint8(200), np.uint8(250)), [234, 233, 233])


def test_huge_upper_is_bounded_by_the_budget_or_refused():
    """Memory grows with B x (n_max - L), n_max = min(U, C - (B-1) L): an upper far above what
    the budget can give costs nothing more; a problem past MAX_GAIN_SLOTS is refused by name."""
    a = np.linspace(0.05, 1.0, 200)
    for method in ("exact", "paper"):
        huge = allocate(a, 2_000, 3, 10**15, "rloo", method)
        np.testing.assert_array_equal(huge, allocate(a, 2_000, 3, 2_000 - 199 * 3, "rloo", method))
    np.testing.assert_array_equal(
        released_vip_allocation(np.linspace(0.1, 0.9, 200), 2_000, 4, 10**15),
        released_vip_allocation(np.linspace(0.1, 0.9, 200), 2_000, 4, 2_000 - 199 * 4),
    )
    with pytest.raises(ValueError, match=rf"upper: .* exceed the limit of {MAX_GAIN_SLOTS:,}.*upper = {10**15}"):
        allocate(a, 10**12, 3, 10**15, "rloo")
    assert allocate(a, 10**12, 3, 10**15, "rloo", "relaxed").sum() == pytest.approx(10**12)  # O(B): not limited
