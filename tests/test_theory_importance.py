"""theory/importance.py (CTPO §2-3): ratios, clip bounds, variance formulas, objectives and
their gradients; masks and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.importance import (
    adaptive_clip_bounds,
    ctpo_objective,
    ctpo_released_objective,
    cumulative_log_ratio_variance,
    cumulative_ratio,
    cumulative_ratio_variance,
    grpo_objective,
    gspo_objective,
    gspo_ratio,
    log_cumulative_ratio,
    objective_gradient,
    sequence_ratio,
    token_ratio,
)

OBJECTIVES = {"grpo": grpo_objective, "gspo": gspo_objective, "ctpo": ctpo_objective}


@st.composite
def batches(draw, max_b=5, max_t=8, spread=0.3):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b, t = draw(st.integers(1, max_b)), draw(st.integers(1, max_t))
    lens = rng.integers(1, t + 1, size=b)
    mask = np.arange(t)[None, :] < lens[:, None]
    old = rng.normal(-1.5, 0.5, (b, t))
    new = old + spread * rng.standard_normal((b, t))
    # padding holds garbage that must be ignored
    new = np.where(mask, new, np.nan)
    old = np.where(mask, old, -np.inf)
    return new, old, mask, rng.standard_normal(b)


@given(batches())
@settings(max_examples=100, deadline=None)
def test_ratio_identities(batch):
    new, old, mask, _ = batch
    r, cum = token_ratio(new, old, mask), cumulative_ratio(new, old, mask)
    assert np.all(r > 0) and np.all(cum > 0)
    n = mask.sum(axis=1)
    rows = np.arange(len(n))
    np.testing.assert_allclose(cum[rows, n - 1], sequence_ratio(new, old, mask), rtol=1e-12)
    geo = np.exp(np.log(np.where(mask, r, 1.0)).sum(axis=1) / n)
    np.testing.assert_allclose(gspo_ratio(new, old, mask), geo, rtol=1e-12)
    np.testing.assert_allclose(np.log(cum), log_cumulative_ratio(new, old, mask), atol=1e-12)
    assert np.all(r[~mask] == 1.0) and np.all(cum[~mask] == 1.0)


@given(batches())
@settings(max_examples=60, deadline=None)
def test_on_policy_objectives_equal_the_mean_advantage(batch):
    _, old, mask, adv = batch
    for f in OBJECTIVES.values():
        assert f(old, old, mask, adv) == pytest.approx(adv.mean(), rel=1e-12, abs=1e-12)


@given(batches(), st.sampled_from(sorted(OBJECTIVES)))
@settings(max_examples=40, deadline=None)
def test_gradients_match_finite_differences(batch, name):
    new, old, mask, adv = batch
    new = np.where(mask, new, 0.0)
    grad = objective_gradient(name, new, old, mask, adv)
    h = 1e-6
    for i, j in zip(*np.nonzero(mask)):
        step = np.zeros_like(new)
        step[i, j] = h
        fd = (OBJECTIVES[name](new + step, old, mask, adv) - OBJECTIVES[name](new - step, old, mask, adv)) / (2 * h)
        assert grad[i, j] == pytest.approx(fd, abs=1e-7)
    assert np.all(grad[~mask] == 0.0)


def test_ctpo_gradient_weights_early_tokens_unless_the_prefix_is_detached():
    old = np.full((1, 5), -1.0)
    mask = np.ones((1, 5), dtype=bool)
    full = objective_gradient("ctpo", old, old, mask, np.array([1.0]))
    detached = objective_gradient("ctpo", old, old, mask, np.array([1.0]), detach_prefix=True)
    np.testing.assert_allclose(detached, np.full((1, 5), 0.2))  # Prop 1: every token 1/|o|
    np.testing.assert_allclose(full, [[5, 4, 3, 2, 1]] * np.array(0.2))  # (|o| - t + 1)/|o|
    np.testing.assert_allclose(objective_gradient("grpo", old, old, mask, np.array([1.0])), detached)


def test_clipping_stops_the_gradient_on_the_kept_side():
    old = np.zeros((2, 1))
    new = np.log(np.array([[1.5], [0.5]]))  # r = 1.5 (above 1.2) and 0.5 (below 0.8)
    mask = np.ones((2, 1), dtype=bool)
    grad = objective_gradient("grpo", new, old, mask, np.array([1.0, 1.0]))
    assert grad[0, 0] == 0.0 and grad[1, 0] > 0  # A > 0: clipped above, not below
    grad = objective_gradient("grpo", new, old, mask, np.array([-1.0, -1.0]))
    assert grad[0, 0] < 0 and grad[1, 0] == 0.0


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
@settings(max_examples=50, deadline=None)
def test_adaptive_bounds_widen_with_position(eps_low, eps_high, power):
    low, high = adaptive_clip_bounds(np.arange(1, 200), eps_low, eps_high, power)
    assert np.all(np.diff(low) <= 0) and np.all(np.diff(high) >= 0)
    assert np.all(low <= 1.0) and np.all(high >= 1.0)
    np.testing.assert_allclose(np.log(high[[0, 3, 8]]), eps_high * np.array([1, 4, 9]) ** power, atol=1e-15)


def test_variance_formulas():
    chi2 = np.array([0.1, 0.2, 0.05])
    np.testing.assert_allclose(cumulative_ratio_variance(chi2), [0.1, 1.1 * 1.2 - 1, 1.1 * 1.2 * 1.05 - 1])
    delta, h = 1e-9, 100
    var = cumulative_ratio_variance(np.full(h, delta))
    np.testing.assert_allclose(var[-1] / var[[0, 9, 49]], [100, 10, 2], rtol=1e-6)  # -> H/t as delta -> 0
    np.testing.assert_allclose(cumulative_log_ratio_variance(np.full(4, 0.3)), 0.3 * np.arange(1, 5))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: token_ratio(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), bool)), "one shape"),
        (lambda: token_ratio(np.zeros(3), np.zeros(3), np.ones(3, bool)), "2-D"),
        (lambda: token_ratio(np.zeros((1, 3)), np.zeros((1, 3)), np.array([[True, False, True]])), "no holes"),
        (lambda: token_ratio(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3), bool)), "at least one real token"),
        (
            lambda: token_ratio(np.array([[0.0, np.nan]]), np.zeros((1, 2)), np.ones((1, 2), bool)),
            "finite at real tokens",
        ),
        (lambda: token_ratio(np.zeros((1, 2)), np.zeros((1, 2)), np.array([[2, 0]])), "boolean"),
        (
            lambda: grpo_objective(np.zeros((2, 2)), np.zeros((2, 2)), np.ones((2, 2), bool), np.zeros(3)),
            r"advantages must have shape \(B,\)",
        ),
        (
            lambda: ctpo_objective(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2), bool), [np.nan]),
            "advantages must be finite",
        ),
        (lambda: adaptive_clip_bounds(0), "t must be >= 1"),
        (lambda: adaptive_clip_bounds(3, eps_low=-0.1), "eps_low must be >= 0"),
        (lambda: cumulative_ratio_variance([0.1, -0.2]), "chi2_per_position must be >= 0"),
        (
            lambda: objective_gradient("ppo", np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1), bool), [1.0]),
            "objective must be one of",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- CTPO on long responses: the cap on log rho_t^cum --------------------------------------------


def _drifting(b=4, t=400, drift=2.5, seed=0):
    """Rows whose log rho_t^cum walks to about +-drift * t (up to 1000 here) and mixed advantages."""
    rng = np.random.default_rng(seed)
    old = rng.normal(-1.5, 0.5, (b, t))
    signs = np.array([1.0, -1.0, 1.0, -1.0])[:b, None]
    new = old + signs * drift + 0.3 * rng.standard_normal((b, t))
    return new, old, np.ones((b, t), dtype=bool), np.array([1.0, 1.0, -1.0, -1.0])[:b]


def test_ctpo_is_finite_with_finite_gradients_for_cumulative_log_ratios_in_the_thousands():
    new, old, mask, adv = _drifting()
    assert np.abs(log_cumulative_ratio(new, old, mask)).max() > 900
    assert np.isfinite(ctpo_objective(new, old, mask, adv))
    assert np.all(np.isfinite(objective_gradient("ctpo", new, old, mask, adv)))


def test_uncapped_ctpo_overflows_on_long_responses():
    """Negative control: without the cap, e^(log rho) is inf past 709 and the gradient is NaN."""
    new, old, mask, adv = _drifting()
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(ctpo_objective(new, old, mask, adv, log_ratio_cap=np.inf))
        assert np.isnan(objective_gradient("ctpo", new, old, mask, adv, log_ratio_cap=np.inf)).any()


def test_ctpo_cap_changes_nothing_where_the_clip_binds_or_the_ratio_is_below_the_cap():
    """A > 0 with ratios up to e^600 (the clip binds above: float64 holds the uncapped form), and any A
    with log rho_t^cum <= 30: capped and uncapped objectives and gradients are equal."""
    new, old, mask, _ = _drifting(b=2, t=240)
    adv = np.array([1.0, 2.0])
    assert log_cumulative_ratio(new, old, mask).max() > 500
    for a, rows in ((adv, slice(None)), (np.array([-1.0]), slice(1, 2))):
        args = (new[rows], old[rows], mask[rows], a)
        assert ctpo_objective(*args) == ctpo_objective(*args, log_ratio_cap=np.inf)
        uncapped = objective_gradient("ctpo", *args, log_ratio_cap=np.inf)
        np.testing.assert_array_equal(objective_gradient("ctpo", *args), uncapped)
    small = (old[:, :12] + 2.0, old[:, :12], mask[:, :12], np.array([-1.0, 1.0]))  # log rho_t^cum = 2t <= 24
    assert ctpo_objective(*small) == ctpo_objective(*small, log_ratio_cap=np.inf)


def test_ctpo_cap_is_refused_when_negative():
    with pytest.raises(ValueError, match="log_ratio_cap must be >= 0"):
        ctpo_objective(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2), bool), [1.0], log_ratio_cap=-1.0)


# --- CTPO as released ------------------------------------------------------------------------------


@given(batches(spread=0.1))
@settings(max_examples=40, deadline=None)
def test_released_gradient_is_prop_1s_estimator_where_the_dual_clip_does_not_bind(batch):
    """With A > 0 (the dual clip acts on A < 0 only) and with every A on-policy, the released gradient
    is the prefix-detached gradient of the paper's surrogate, and its on-policy value is the mean A."""
    new, old, mask, adv = batch
    new = np.where(mask, new, 0.0)
    for args in ((new, old, mask, np.abs(adv)), (old, old, mask, adv)):
        released = objective_gradient("ctpo_released", *args, aggregation="sequence_mean")
        np.testing.assert_allclose(released, objective_gradient("ctpo", *args, detach_prefix=True), rtol=1e-12)
    lengths = mask.sum(axis=1)
    assert ctpo_released_objective(old, old, mask, adv) == pytest.approx(lengths @ adv / lengths.sum(), abs=1e-12)


def test_released_dual_clip_holds_negative_advantages_at_its_threshold():
    """A < 0 with rho_t^cum = e^(0.2 t): above e^(0.05 sqrt(t)), the term is A e^(0.05 sqrt(t)) with no
    gradient; the paper's surrogate keeps A rho_t^cum and its gradient (negative control)."""
    old = np.zeros((1, 4))
    new, mask, adv = np.full((1, 4), 0.2), np.ones((1, 4), dtype=bool), np.array([-1.0])
    t = np.arange(1, 5)
    assert ctpo_released_objective(new, old, mask, adv) == pytest.approx(-np.mean(np.exp(0.05 * np.sqrt(t))))
    assert np.all(objective_gradient("ctpo_released", new, old, mask, adv) == 0.0)
    assert np.all(objective_gradient("ctpo", new, old, mask, adv, detach_prefix=True) < 0)


def test_released_fixed_clip_mode_is_cum_token_cumprod():
    """power = 0 with eps = -log(0.8), log(1.2) and dual_clip = log 3: the release's cum-token-cumprod
    mode, clip(rho, 0.8, 1.2) and, for A < 0, min(..., 3) on the loss (core_algos.py:1392-1403)."""
    rng = np.random.default_rng(5)
    old = rng.normal(-1.5, 0.5, (6, 7))
    new, mask = old + 0.4 * rng.standard_normal((6, 7)), np.ones((6, 7), dtype=bool)
    adv = np.resize([1.5, -0.5, -2.0], 6)
    rho = np.exp(np.minimum(np.cumsum(new - old, axis=1), 10.0))
    loss = np.maximum(-adv[:, None] * rho, -adv[:, None] * np.clip(rho, 0.8, 1.2))
    loss = np.where(adv[:, None] < 0, np.minimum(-adv[:, None] * 3.0, loss), loss)
    fixed = {"eps_low": -np.log(0.8), "eps_high": np.log(1.2), "power": 0.0, "dual_clip": np.log(3.0)}
    assert np.any((adv[:, None] < 0) & (rho > 3))  # the dual clip binds somewhere
    assert ctpo_released_objective(new, old, mask, adv, **fixed) == pytest.approx(-loss.mean(), rel=1e-12)


def test_released_cap_changes_nothing_below_t_40000_with_the_release_defaults():
    """log rho_t^cum > 10 lies above e^(0.05 sqrt(t)) for t < 40,000, where the clip (A > 0) or the
    dual clip (A < 0) holds the term constant already: capped and uncapped agree (float64 holds e^600)."""
    new, old, mask, adv = _drifting(t=240)
    assert log_cumulative_ratio(new, old, mask).max() > 500
    args, uncapped = (new, old, mask, adv), {"log_ratio_cap": np.inf}
    assert ctpo_released_objective(*args) == ctpo_released_objective(*args, **uncapped)
    gradient = objective_gradient("ctpo_released", *args)
    np.testing.assert_array_equal(gradient, objective_gradient("ctpo_released", *args, **uncapped))
    wide = {"eps_high": 1.0, "dual_clip": 1.0}  # e^(sqrt(t)) passes e^10 at t = 100: the cap binds (control)
    assert ctpo_released_objective(*args, **wide) != ctpo_released_objective(*args, **wide, **uncapped)


@pytest.mark.parametrize(
    "keywords, match",
    [
        ({"dual_clip": -0.1}, "dual_clip must be >= 0"),
        ({"token_log_ratio_clamp": 0.0}, "token_log_ratio_clamp must be > 0"),
        ({"log_ratio_cap": -1.0}, "log_ratio_cap must be >= 0"),
        ({"aggregation": "constant"}, "aggregation must be one of sequence_mean, token_mean"),
    ],
)
def test_released_bad_input(keywords, match):
    with pytest.raises(ValueError, match=match):
        ctpo_released_objective(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2), bool), [1.0], **keywords)
