"""Properties of theory/variance.py (Props 4.2, 4.3, E.1, E.2 and our i.i.d.-pairs generalisation)."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from theory.variance import (
    advantage_coefficients,
    gradient_mean_iid,
    gradient_variance,
    gradient_variance_iid,
    group_advantages,
    independent_moments,
    projected_gradient,
)

probs = st.floats(0.0, 1.0, allow_nan=False)
sizes = st.integers(2, 512)
sigmas = st.floats(1e-3, 1e3, allow_nan=False)
estimators = st.sampled_from(["dr_grpo", "rloo"])


@given(estimators, sizes, probs, sigmas)
def test_symmetric_in_p(estimator, n, p, s2):
    assume(1.0 - (1.0 - p) == p)  # p and 1 - p both exact in floating point
    a = gradient_variance(estimator, n, p=p, sigma_z2=s2)
    b = gradient_variance(estimator, n, p=1.0 - p, sigma_z2=s2)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-300)


@given(estimators, sizes, sigmas)
def test_zero_at_deterministic_rewards(estimator, n, s2):
    assert gradient_variance(estimator, n, p=0.0, sigma_z2=s2) == 0.0
    assert gradient_variance(estimator, n, p=1.0, sigma_z2=s2) == 0.0


@given(sizes, probs, sigmas)
def test_rloo_over_dr_grpo_ratio(n, p, s2):
    dr = gradient_variance("dr_grpo", n, p=p, sigma_z2=s2)
    rloo = gradient_variance("rloo", n, p=p, sigma_z2=s2)
    assert rloo == pytest.approx(dr * n**2 / (n - 1) ** 2, rel=1e-12, abs=1e-300)


@given(st.integers(2, 511), st.floats(1e-3, 1 - 1e-3), sigmas)
def test_rloo_decreasing_in_n(n, p, s2):
    assert gradient_variance("rloo", n + 1, p=p, sigma_z2=s2) < gradient_variance("rloo", n, p=p, sigma_z2=s2)


def test_dr_grpo_peaks_at_two():
    # (n - 1)/n^2 rises from 0 at n = 1 to 1/4 at n = 2, then decreases: why VIP needs n >= 3 for convexity.
    values = gradient_variance("dr_grpo", np.arange(1, 10), p=0.5)
    assert values[0] == 0.0 and np.argmax(values) == 1 and np.all(np.diff(values[1:]) < 0)


@given(estimators, sizes, probs)
def test_binary_equals_continuous_with_bernoulli_variance(estimator, n, p):
    binary = gradient_variance(estimator, n, p=p)
    continuous = gradient_variance(estimator, n, reward_var=4 * p * (1 - p))
    assert binary == pytest.approx(continuous, rel=1e-12, abs=1e-300)


def test_vectorised_broadcasting():
    out = gradient_variance("rloo", np.array([[2], [4]]), p=np.array([0.1, 0.5, 0.9]))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out[1], 4 * np.array([0.09, 0.25, 0.09]) / 3)


@given(estimators, st.integers(2, 64), st.floats(-1, 1), st.floats(0, 4), st.floats(-3, 3), st.floats(0, 4))
@settings(max_examples=200)
def test_iid_formula_reduces_to_props_under_independence(estimator, n, mean_r, var_r, mean_z, var_z):
    moments = independent_moments(mean_r, var_r, mean_z, var_z)
    exact = gradient_variance_iid(estimator, n, moments)
    prop = gradient_variance(estimator, n, reward_var=var_r, sigma_z2=var_z)
    assert exact == pytest.approx(prop, rel=1e-9, abs=1e-9)
    assert gradient_mean_iid(estimator, n, moments) == pytest.approx(0.0, abs=1e-9)


def test_iid_formula_matches_brute_force_enumeration():
    # Exact E[G^2] by enumerating every outcome of n = 3 i.i.d. pairs drawn from a small joint law.
    values = np.array([(1.0, 0.5), (1.0, 2.0), (-1.0, 0.7), (-1.0, 1.5)])
    weights = np.array([0.1, 0.3, 0.4, 0.2])
    moments = {
        (a, b): float(np.sum(weights * values[:, 0] ** a * values[:, 1] ** b)) for a in range(3) for b in range(3)
    }
    idx = np.indices((4, 4, 4)).reshape(3, -1).T
    prob = weights[idx].prod(axis=1)
    for estimator in ("dr_grpo", "rloo"):
        g = projected_gradient(values[idx, 0], values[idx, 1], estimator)
        mean = np.sum(prob * g)
        assert gradient_mean_iid(estimator, 3, moments) == pytest.approx(mean, rel=1e-12)
        assert gradient_variance_iid(estimator, 3, moments) == pytest.approx(np.sum(prob * g**2) - mean**2, rel=1e-12)


def test_advantages_match_definitions():
    r = np.array([[1.0, -1.0, 1.0, 1.0]])
    np.testing.assert_allclose(group_advantages(r, "dr_grpo"), r - 0.5)
    np.testing.assert_allclose(group_advantages(r, "rloo"), [[1 - 1 / 3, -1 - 1, 1 - 1 / 3, 1 - 1 / 3]])
    c_same, c_diff = advantage_coefficients("rloo", 4)
    assert (c_same, c_diff) == (1.0, -1 / 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(estimator="grpo", n=4, p=0.5), "estimator must be one of"),
        (dict(estimator="rloo", n=1, p=0.5), r"n \(rloo\) must be >= 2"),
        (dict(estimator="dr_grpo", n=0, p=0.5), r"n \(dr_grpo\) must be >= 1"),
        (dict(estimator="dr_grpo", n=4, p=1.5), r"p must lie in \[0, 1\]"),
        (dict(estimator="dr_grpo", n=4, p=-0.1), r"p must lie in \[0, 1\]"),
        (dict(estimator="dr_grpo", n=4, p=float("nan")), "p must be finite"),
        (dict(estimator="dr_grpo", n=4, reward_var=-1.0), "reward_var must be >= 0"),
        (dict(estimator="dr_grpo", n=4, p=0.5, sigma_z2=-2.0), "sigma_z2 must be >= 0"),
        (dict(estimator="dr_grpo", n=4), "exactly one of p"),
        (dict(estimator="dr_grpo", n=4, p=0.5, reward_var=1.0), "exactly one of p"),
    ],
)
def test_bad_input(kwargs, match):
    estimator = kwargs.pop("estimator")
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        gradient_variance(estimator, n, **kwargs)


def test_projected_gradient_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        projected_gradient(np.ones((2, 3)), np.ones((2, 4)), "dr_grpo")
    with pytest.raises(ValueError, match="group axis"):
        group_advantages(1.0, "dr_grpo")
    with pytest.raises(ValueError, match="rewards must be finite"):
        group_advantages(np.array([1.0, np.nan]), "dr_grpo")
