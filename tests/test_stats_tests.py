"""stats_tests (VIP App. B, claim V11): the paper's formulas against scipy and statsmodels,
published reference values, invariances, and every edge case of the input."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats import oneway as sm_oneway

from stats_tests import correlation, edgington_correlation_test, fisher_correlation_test, levene_test, obrien_test
from stats_tests.rollout_log import groups_by_step, read_rollout_log

EXAMPLE_LOG = Path(__file__).resolve().parents[1] / "stats_tests" / "data" / "example_rollouts.jsonl"

# NIST/SEMATECH e-Handbook §1.3.5.10 (GEAR.DAT): ten batches of ten gear diameters, the data
# scipy's own Levene test uses. NIST reports W = 1.705910 (median centring).
GEAR = np.array(
    [
        [1.006, 0.996, 0.998, 1.000, 0.992, 0.993, 1.002, 0.999, 0.994, 1.000],
        [0.998, 1.006, 1.000, 1.002, 0.997, 0.998, 0.996, 1.000, 1.006, 0.988],
        [0.991, 0.987, 0.997, 0.999, 0.995, 0.994, 1.000, 0.999, 0.996, 0.996],
        [1.005, 1.002, 0.994, 1.000, 0.995, 0.994, 0.998, 0.996, 1.002, 0.996],
        [0.998, 0.998, 0.982, 0.990, 1.002, 0.984, 0.996, 0.993, 0.980, 0.996],
        [1.009, 1.013, 1.009, 0.997, 0.988, 1.002, 0.995, 0.998, 0.981, 0.996],
        [0.990, 1.004, 0.996, 1.001, 0.998, 1.000, 1.018, 1.010, 0.996, 1.002],
        [0.998, 1.000, 1.006, 1.000, 1.002, 0.996, 0.998, 0.996, 1.002, 1.006],
        [1.002, 0.998, 0.996, 0.995, 0.996, 1.004, 1.004, 0.998, 0.999, 0.991],
        [0.991, 0.995, 0.984, 0.994, 0.997, 0.997, 0.991, 0.998, 1.004, 0.997],
    ]
)


@st.composite
def ragged(draw, min_groups=2, max_groups=12):
    """Groups of sizes 3..20 of continuous values (ties have probability 0)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(3, 20), min_size=min_groups, max_size=max_groups))
    scale = rng.uniform(0.5, 2.0, size=len(sizes))
    return [rng.lognormal(size=n) * s for n, s in zip(sizes, scale)], [rng.standard_normal(n) for n in sizes]


def test_levene_matches_nist_gear_data():
    res = levene_test(GEAR)
    assert res.statistic == pytest.approx(1.7059176930008939, rel=1e-10)
    assert res.pvalue == pytest.approx(0.0990829755522, rel=1e-9)
    assert res.statistic == pytest.approx(1.705910, abs=1e-5)  # the figure NIST prints
    assert res.dof == (9, 90) and res.n_groups == 10 and res.n_observations == 100


@given(ragged())
@settings(max_examples=60, deadline=None)
def test_variance_tests_agree_with_scipy_and_statsmodels(data):
    norms, _ = data
    lev = levene_test(norms)
    ref = stats.levene(*norms, center="median")
    assert lev.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert lev.pvalue == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-300)
    sm = sm_oneway.test_scale_oneway(norms, method="equal", center="median", transform="abs")
    assert lev.statistic == pytest.approx(sm.statistic, rel=1e-10)
    ob = obrien_test(norms)
    ref = stats.f_oneway(*stats.obrientransform(*norms))
    assert ob.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert ob.pvalue == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-300)


@given(ragged(min_groups=1))
@settings(max_examples=60, deadline=None)
def test_correlation_tests_agree_with_a_per_group_loop(data):
    norms, rewards = data
    per_group = np.array([stats.pearsonr(r, z).pvalue for r, z in zip(rewards, norms)])
    fisher = fisher_correlation_test(rewards, norms)
    np.testing.assert_allclose(fisher.group_pvalues, per_group, rtol=1e-10)
    statistic = -2 * np.sum(np.log(per_group))
    assert fisher.statistic == pytest.approx(statistic, rel=1e-10)
    assert fisher.pvalue == pytest.approx(stats.chi2.sf(statistic, 2 * len(norms)), rel=1e-9, abs=1e-300)
    assert fisher.dof == 2 * len(norms)
    edg = edgington_correlation_test(rewards, norms)
    assert edg.statistic == pytest.approx(per_group.sum(), rel=1e-12)
    assert edg.pvalue == pytest.approx(stats.irwinhall(len(norms)).cdf(per_group.sum()), rel=1e-9, abs=1e-300)
    normal = edgington_correlation_test(rewards, norms, method="normal")
    q = len(norms)
    assert normal.pvalue == pytest.approx(stats.norm.cdf((per_group.sum() - q / 2) / np.sqrt(q / 12)), rel=1e-12)


def test_edgington_normal_approximation_is_close_at_the_papers_scale():
    rng = np.random.default_rng(0)
    rewards, norms = rng.standard_normal((600, 16)), rng.lognormal(size=(600, 16))
    exact = edgington_correlation_test(rewards, norms).pvalue
    assert edgington_correlation_test(rewards, norms, method="normal").pvalue == pytest.approx(exact, abs=1e-3)


@given(
    ragged(),
    st.randoms(use_true_random=False),
    st.floats(0.1, 10.0),
    st.floats(-5.0, 5.0),
    st.sampled_from([1.0, -1.0]),
)
@settings(max_examples=60, deadline=None)
def test_invariances(data, random, scale, shift, sign):
    norms, rewards = data
    order = random.sample(range(len(norms)), len(norms))
    moved = [norms[i] for i in order]
    affine = [sign * scale * z + shift for z in norms]
    for test in (levene_test, obrien_test):
        base = test(norms)
        assert 0.0 <= base.pvalue <= 1.0
        assert test(moved).statistic == pytest.approx(base.statistic, rel=1e-9)
        assert test(affine).statistic == pytest.approx(base.statistic, rel=1e-7)
    for test in (fisher_correlation_test, edgington_correlation_test):
        base = test(rewards, norms)
        assert 0.0 <= base.pvalue <= 1.0
        assert test([rewards[i] for i in order], moved).pvalue == pytest.approx(base.pvalue, rel=1e-9)
        assert test(rewards, affine).pvalue == pytest.approx(
            base.pvalue, rel=1e-7
        )  # two-sided: the sign does not matter


@pytest.mark.parametrize("scale", [1e160, 1e300, 1e-300])
def test_variance_tests_stay_finite_at_extreme_scales(scale):
    """Squares of Z overflow at |Z| ~ 1e154 (and O'Brien's W squares Z^2 again); the tests
    rescale by a power of two first, so W matches the unit-scale W."""
    rng = np.random.default_rng(4)
    norms = rng.lognormal(size=(12, 8))
    for test in (levene_test, obrien_test):
        assert test(norms * scale).statistic == pytest.approx(test(norms).statistic, rel=1e-9)
        assert test(norms * 2.0**-900).statistic == test(norms).statistic  # a power of two: bit for bit


def test_small_and_constant_groups_are_excluded_and_counted():
    rng = np.random.default_rng(1)
    rewards = [rng.standard_normal(8), np.ones(8), rng.standard_normal(2), rng.standard_normal(6)]
    norms = [rng.lognormal(size=8), rng.lognormal(size=8), rng.lognormal(size=2), np.full(6, 0.3)]
    res = fisher_correlation_test(rewards, norms)
    assert res.n_groups == 1 and res.excluded.too_small == 1 and res.excluded.constant == 2
    lev = levene_test(norms)
    assert lev.n_groups == 3 and lev.excluded.too_small == 1  # a constant group is fine for a variance test


def _tolerance_p(n: int) -> float:
    """The p-value stats_tests.correlation gives a group of n collinear within rounding."""
    half = n / 2 - 1
    return 2 * stats.beta(half, half, loc=-1, scale=2).sf(1 - correlation.R_TOLERANCE)


def test_a_correlation_at_one_within_rounding_gets_the_p_value_of_the_tolerance():
    """r = 1 exactly, and r = -1 up to rounding (1 - |r| about 1e-16), get one p-value; a group
    with 1 - |r| = 1e-6 keeps pearsonr's own (the control)."""
    x = np.arange(8.0)
    near = x + np.array([0, 0, 0, 1e-3, 0, 0, 0, 0])
    rounding = -0.1 * x + 0.3  # 0.1 is not a binary fraction: r rounds near -1
    res = fisher_correlation_test([x, x, x], [2 * x, rounding, near])
    assert 1 - abs(stats.pearsonr(x, rounding).statistic) < 1e-15
    assert res.collinear == 2 and np.isfinite(res.statistic)
    assert res.group_pvalues[0] == res.group_pvalues[1] == _tolerance_p(8)
    assert res.group_pvalues[2] == stats.pearsonr(x, near).pvalue > _tolerance_p(8)


def test_the_shipped_logs_p_values_do_not_depend_on_an_affine_map_of_the_rewards(monkeypatch):
    """The reproduction of issue 29: step 2 of the example log holds a question at r = -1 within
    rounding. Mapped to rewards 5 / -3, its p-value stays; with no tolerance (the negative
    control) it moves by hundreds of orders of magnitude."""
    rewards, norms = groups_by_step(read_rollout_log(EXAMPLE_LOG))[2]
    variants = [([8 * r - 3 for r in rewards], norms), (rewards, [z * 1e3 for z in norms])]
    base = fisher_correlation_test(rewards, norms).pvalue
    assert fisher_correlation_test(rewards, norms).collinear == 1
    for mapped_rewards, mapped_norms in variants:
        assert fisher_correlation_test(mapped_rewards, mapped_norms).pvalue == pytest.approx(base, rel=1e-9)
    monkeypatch.setattr(correlation, "R_TOLERANCE", 0.0)
    base = fisher_correlation_test(rewards, norms).pvalue
    moved = [abs(np.log10(fisher_correlation_test(*variant).pvalue / base)) for variant in variants]
    assert max(moved) > 100, moved  # which variant moves depends on the processor's rounding


@given(
    ragged(),
    st.floats(1e-3, 1e3),
    st.sampled_from([1.0, -1.0]),
    st.floats(-1e3, 1e3),
    st.floats(1e-6, 1e6),
    st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_every_p_value_is_invariant_to_an_affine_map_of_rewards_and_a_scale_of_norms(
    data, size, sign, shift, scale, collinear
):
    """Any affine map of the rewards (a != 0) and any positive scale of the norms: every test's
    p-value within 1e-7 (relative) and the same decision at alpha = 0.05; with ``collinear``
    one question's rewards are an affine map of its norms (r = +-1 within rounding)."""
    norms, rewards = data
    if collinear:
        rewards = [0.1 * norms[0] - 0.7] + rewards[1:]
    mapped = [sign * size * r + shift for r in rewards]
    scaled = [scale * z for z in norms]
    for test in (fisher_correlation_test, edgington_correlation_test):
        base, other = test(rewards, norms).pvalue, test(mapped, scaled).pvalue
        assert other == pytest.approx(base, rel=1e-7, abs=1e-300)
        assert (other < 0.05) == (base < 0.05) or abs(base - 0.05) < 1e-8
    for test in (levene_test, obrien_test):
        assert test(scaled).pvalue == pytest.approx(test(norms).pvalue, rel=1e-7, abs=1e-300)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fisher_correlation_test([[1.0, np.nan, 2.0]], [[1.0, 2.0, 3.0]]), r"rewards\[0\] must be finite"),
        (lambda: levene_test(np.array([[1.0, 2.0, np.inf], [1.0, 2.0, 3.0]])), r"groups\[0\] must be finite"),
        (
            lambda: fisher_correlation_test([[1.0, 2.0, 3.0]], [[1.0, 2.0]]),
            r"rewards\[0\] and norms\[0\] must have the same size",
        ),
        (
            lambda: fisher_correlation_test([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]),
            "same number of groups",
        ),
        (lambda: fisher_correlation_test([[1.0, 1.0, 1.0]], [[1.0, 2.0, 3.0]]), "no usable group"),
        (
            lambda: edgington_correlation_test([[1.0, 2.0, 4.0]], [[1.0, 2.0, 3.0]], method="fast"),
            "method must be one of",
        ),
        (lambda: levene_test([[1.0, 2.0, 3.0], [1.0, 2.0]]), "at least 2 groups of size >= 3"),
        (lambda: levene_test([]), "at least one group"),
        (lambda: levene_test(np.ones(5)), "2-D array"),
        (lambda: obrien_test([np.ones(4), np.ones(5)]), "zero within-group dispersion"),
        (lambda: levene_test([np.ones((2, 2)), np.ones(3)]), r"groups\[0\] must be 1-D"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
