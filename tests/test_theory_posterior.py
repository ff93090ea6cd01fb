"""The GP's latent posterior variance, E[p (1 - p)] under it, its fitted scale
(theory/predictor.py) and the vip_posterior allocation rule (theory/allocation.py, ours)."""

import numpy as np
import pytest
from scipy import integrate, special, stats

from theory import allocation_rules as rules
from theory.predictor import SCALE_GRID, GPSuccessPredictor, VarianceScaleFit, success_rates

POSTERIOR = rules.ALLOCATION_RULES["vip_posterior"]


def world(seed=0, q=30, d=3):
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal((q, d))


def steps(gp, rng, n_steps=3, batch=8):
    """Updates on random batches with 2-9 rollouts each; the last batch and its rewards."""
    for _ in range(n_steps):
        idx = rng.choice(gp.n_prompts, batch, replace=False)
        rewards = [np.where(rng.random(int(rng.integers(2, 10))) < rng.random(), 1.0, 0.0) for _ in idx]
        gp.update(idx, rewards)
    return idx, rewards


def kernel(x, h):
    return np.exp(-((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / (2 * h**2))


@pytest.mark.parametrize("noise", [None, "binomial"])
def test_latent_variance_is_the_gp_posterior_on_the_last_batch(noise):
    """k(x, x) - k_xB (K_BB + D)^-1 k_Bx with the full Q x Q kernel and a dense solve, D the jitter
    (noiseless) or jitter + 1/(n p (1 - p)) (binomial); 1 before any update. Negative control: the
    posterior given every batch so far (which Algorithm 1's fixed prior covariance does not use)
    is smaller for prompts near the earlier batches."""
    rng, x = world()
    gp = GPSuccessPredictor(x, bandwidth=1.5, precision="float64", observation_noise=noise)
    np.testing.assert_array_equal(gp.latent_variance(np.arange(30)), 1.0)
    first, _ = steps(gp, rng, n_steps=2)
    idx, rewards = steps(gp, rng, n_steps=1)
    noise_diag = np.full(idx.size, gp.jitter)
    if noise == "binomial":
        n = np.array([len(r) for r in rewards], dtype=float)
        p = np.clip(success_rates(rewards), gp.eps, 1 - gp.eps)
        noise_diag += 1.0 / (n * p * (1 - p))
    k = kernel(x, 1.5)
    dense = 1.0 - np.einsum(
        "ij,ji->i", k[:, idx], np.linalg.solve(k[np.ix_(idx, idx)] + np.diag(noise_diag), k[idx, :])
    )
    np.testing.assert_allclose(gp.latent_variance(np.arange(30)), dense, rtol=1e-9, atol=1e-12)
    both = np.concatenate([first, idx])
    full_noise = np.concatenate([np.full(first.size, noise_diag.max()), noise_diag])
    all_batches = 1.0 - np.einsum(
        "ij,ji->i", k[:, both], np.linalg.solve(k[np.ix_(both, both)] + np.diag(full_noise), k[both, :])
    )
    assert np.max(dense - all_batches) > 0.1


def test_posterior_survives_state_dict_round_trip():
    """A restored GP gives the same latent variance, E[p (1 - p)] and fitted scale, and keeps
    doing so after further updates (resume)."""
    rng, x = world(q=40)
    first = GPSuccessPredictor(x, observation_noise="binomial", variance_scale="fitted")
    second = GPSuccessPredictor(x, observation_noise="binomial", variance_scale="fitted")
    steps(first, rng, n_steps=2)
    second.load_state_dict(first.state_dict())
    everyone = np.arange(40)
    for _ in range(2):
        np.testing.assert_array_equal(second.latent_variance(everyone), first.latent_variance(everyone))
        np.testing.assert_array_equal(
            second.expected_success_variance(everyone), first.expected_success_variance(everyone)
        )
        assert second.variance_scale == first.variance_scale
        idx = rng.choice(40, 8, replace=False)
        rewards = [(rng.random(6) < 0.4).astype(float) for _ in idx]
        first.update(idx, rewards)
        second.update(idx, rewards)
    fresh = GPSuccessPredictor(x, observation_noise="binomial", variance_scale="fitted")
    assert not np.array_equal(fresh.latent_variance(everyone), first.latent_variance(everyone))


@pytest.mark.parametrize(
    "state, match",
    [
        (
            {"last_batch": np.array([0, 40]), "last_noise": np.zeros(2)},
            r"state\['last_batch'\]: indices must lie in \[0, 39\]",
        ),
        ({"last_batch": np.array([0, 1]), "last_noise": np.zeros(3)}, r"state\['last_noise'\] must hold one"),
        ({"last_batch": np.array([0, 1]), "last_noise": np.array([0.1, -1.0])}, r"finite value >= 0"),
        ({"variance_scale_fit": {"batches": [(4, np.zeros(3))]}}, r"state\['variance_scale_fit'\] must hold"),
    ],
)
def test_a_bad_posterior_state_is_refused_and_changes_nothing(state, match):
    rng, x = world(q=40)
    gp = GPSuccessPredictor(x, variance_scale="fitted")
    steps(gp, rng, n_steps=2)
    saved = gp.state_dict()
    before = gp.latent_variance(np.arange(40)), gp.variance_scale, gp.mean.copy()
    with pytest.raises(ValueError, match=match):
        gp.load_state_dict(saved | state)
    np.testing.assert_array_equal(gp.latent_variance(np.arange(40)), before[0])
    assert gp.variance_scale == before[1]
    np.testing.assert_array_equal(gp.mean, before[2])


def test_a_state_without_the_last_update_loads_with_the_prior_variance():
    """A state saved without the last update's batch (before any update, or by a GP that kept none)
    restores the mean and gives the prior's variance until the next update."""
    rng, x = world(q=40)
    gp = GPSuccessPredictor(x)
    steps(gp, rng, n_steps=2)
    state = {k: v for k, v in gp.state_dict().items() if k not in ("last_batch", "last_noise")}
    restored = GPSuccessPredictor(x)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.mean, gp.mean)
    np.testing.assert_array_equal(restored.latent_variance(np.arange(40)), 1.0)
    assert np.min(gp.latent_variance(np.arange(40))) < 0.5
    steps(restored, rng, n_steps=1)
    assert np.min(restored.latent_variance(np.arange(40))) < 0.5


@pytest.mark.parametrize("mean, variance", [(0.0, 1.0), (-3.0, 0.3), (2.5, 4.0), (-6.0, 9.0)])
def test_expected_success_variance_against_monte_carlo(mean, variance):
    """The quadrature against 200,000 draws of g ~ N(mean, variance): |z| < 4 with the SE of the
    same draws; and against scipy.integrate.quad. Negative control: the plug-in
    sigmoid(mean)(1 - sigmoid(mean)) fails the same check."""
    x = np.array([[0.0], [1.0]])
    gp = GPSuccessPredictor(x, bandwidth=1.0, prior_mean=mean, variance_scale=variance)
    got = gp.expected_success_variance(np.array([0]))[0]
    draws = special.expit(np.random.default_rng(7).normal(mean, np.sqrt(variance), 200_000))
    values = draws * (1 - draws)
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(got - values.mean()) / se < 4
    plug_in = special.expit(mean) * special.expit(-mean)
    assert abs(plug_in - values.mean()) / se > 4
    exact, _ = integrate.quad(
        lambda g: special.expit(g) * special.expit(-g) * stats.norm.pdf(g, mean, np.sqrt(variance)),
        mean - 14 * np.sqrt(variance),
        mean + 14 * np.sqrt(variance),
        epsabs=0,
        epsrel=1e-12,
        limit=500,
    )
    assert got == pytest.approx(exact, rel=1e-7)


def test_expected_success_variance_is_the_plug_in_value_where_the_posterior_is_sharp():
    """On the batch of a noiseless update the latent variance is the jitter's (~1e-6), so E[p (1 - p)]
    is p_hat (1 - p_hat) to about that; far from every observation it is E under N(mean, 1)."""
    x = np.array([[0.0], [0.3], [50.0]])
    gp = GPSuccessPredictor(x, bandwidth=1.0, precision="float64", jitter=1e-10)
    gp.update(np.array([0, 1]), [np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0])])
    p = gp.predict(np.array([0, 1, 2]))
    got = gp.expected_success_variance(np.array([0, 1, 2]))
    np.testing.assert_allclose(got[:2], p[:2] * (1 - p[:2]), rtol=1e-8)
    assert got[2] < p[2] * (1 - p[2]) - 0.03  # p_hat = 1/2 there, and the spread lowers E[p (1 - p)]


def test_softplus_and_bad_variance_scales_are_refused_by_name():
    _, x = world()
    with pytest.raises(ValueError, match=r"expected_success_variance needs link='sigmoid'.*got link='softplus'"):
        GPSuccessPredictor(x, link="softplus").expected_success_variance(np.arange(3))
    with pytest.raises(ValueError, match=r"variance_scale='fitted' needs link='sigmoid'"):
        GPSuccessPredictor(x, link="softplus", variance_scale="fitted")
    for bad in (0.0, -1.0, float("nan"), float("inf"), "fit", True, None):
        with pytest.raises(ValueError, match="variance_scale must be a positive finite number or 'fitted'"):
            GPSuccessPredictor(x, variance_scale=bad)
    gp = GPSuccessPredictor(x)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 29\]"):
        gp.latent_variance(np.array([30]))


def test_a_failed_update_leaves_the_posterior_and_the_scale_fit_as_they_were():
    x = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [3.0, 3.0]])
    gp = GPSuccessPredictor(x, bandwidth=1.0, jitter=0.0, variance_scale="fitted")
    gp.update(np.array([2, 3]), [np.ones(4), np.zeros(4)])
    before = gp.latent_variance(np.arange(4)), gp.state_dict()["variance_scale_fit"]["batches"]
    with pytest.raises(ValueError, match=r"K_BB \+ noise is singular"):
        gp.update(np.array([0, 1]), [np.ones(4), np.zeros(4)])
    np.testing.assert_array_equal(gp.latent_variance(np.arange(4)), before[0])
    after = gp.state_dict()["variance_scale_fit"]["batches"]
    assert len(after) == len(before[1]) == 1 and np.array_equal(after[0][1], before[1][0][1])


@pytest.mark.parametrize("true_scale", [1.0, 16.0])
def test_the_fitted_scale_recovers_the_spread_of_the_latents(true_scale):
    """Latents drawn from N(m, c v) and 8 rollouts each: the predictive likelihood picks c within a
    factor of 2 (one grid step) from 3,000 prompts; only the last ``window`` prompts count."""
    rng = np.random.default_rng(3)
    fit = VarianceScaleFit(window=3000)
    assert fit.scale == 1.0
    for _ in range(30):
        m, v = rng.normal(0.0, 1.5, 100), rng.uniform(0.05, 0.5, 100)
        p = special.expit(rng.normal(m, np.sqrt(true_scale * v)))
        trials = np.full(100, 8.0)
        fit.observe(m, v, rng.binomial(8, p).astype(float), trials)
    assert true_scale / 2 <= fit.scale <= 2 * true_scale
    assert fit.scale in SCALE_GRID
    assert sum(size for size, _ in fit.state_dict()["batches"]) <= 3000 + 100


def test_the_gp_fits_its_scale_on_held_out_outcomes():
    """A world whose latents spread far beyond the kernel's amplitude 1 (logits of sd 4 between
    prompts that the kernel calls close): the fitted scale rises above 1 after a few updates."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 2))
    truth = 4.0 * np.sin(3.0 * x[:, 0]) * np.cos(3.0 * x[:, 1])
    gp = GPSuccessPredictor(x, observation_noise="binomial", variance_scale="fitted")
    for _ in range(8):
        idx = rng.choice(400, 40, replace=False)
        gp.update(idx, [(rng.random(8) < special.expit(truth[q])).astype(float) for q in idx])
    assert gp.variance_scale >= 4.0
    assert GPSuccessPredictor(x).variance_scale == 1.0


# --- the vip_posterior rule ---------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["rloo", "dr_grpo"])
@pytest.mark.parametrize("method", ["exact", "paper"])
def test_zero_posterior_variance_gives_vip_exactly(estimator, method):
    """With E[p (1 - p)] = p_hat (1 - p_hat) (no posterior spread) the rule is VIP's. Negative
    control: the GP's E[p (1 - p)] at its posterior spread moves rollouts."""
    rng = np.random.default_rng(1)
    p_hat = rng.uniform(0.001, 0.999, 64)
    budget = 8 * 64
    vip = rules.ALLOCATION_RULES["vip"].allocate(p_hat, budget, 3, 32, estimator, method)
    ours = POSTERIOR.allocate(p_hat, budget, 3, 32, estimator, method, success_variance=p_hat * (1 - p_hat))
    np.testing.assert_array_equal(ours, vip)
    gp = GPSuccessPredictor(rng.standard_normal((64, 2)), prior_mean=0.0)
    gp.mean = special.logit(p_hat)
    spread = POSTERIOR.allocate(
        p_hat, budget, 3, 32, estimator, method, success_variance=gp.expected_success_variance(np.arange(64))
    )
    assert spread.sum() == budget and np.abs(spread - vip).sum() >= 20


def test_posterior_spread_moves_the_allocation_toward_uniform():
    """An unsure prompt with p_hat near 0 has E[p (1 - p)] well above p_hat (1 - p_hat): it gets
    more rollouts than under VIP; one near 1/2 gets fewer."""
    p_hat = np.array([0.02, 0.5, 0.3, 0.7])
    latent = special.logit(p_hat)
    x = np.array([[0.0], [10.0], [20.0], [30.0]])
    gp = GPSuccessPredictor(x, bandwidth=1.0, variance_scale=4.0)
    gp.mean = latent
    vip = rules.ALLOCATION_RULES["vip"].allocate(p_hat, 40, 3, 32, "rloo")
    ours = POSTERIOR.allocate(p_hat, 40, 3, 32, "rloo", success_variance=gp.expected_success_variance(np.arange(4)))
    assert ours[0] > vip[0] and ours[1] < vip[1]


@pytest.mark.parametrize(
    "success_variance, match",
    [
        (None, r"success_variance: the vip_posterior rule allocates on the predictor's posterior .*got None"),
        (np.full(3, 0.1), r"success_variance must hold one value per prompt \(\(4,\), as p_hat\); got shape \(3,\)"),
        (np.array([0.1, 0.3, 0.1, 0.1]), r"success_variance must lie in \[0, 1/4\]"),
        (np.array([0.1, -0.01, 0.1, 0.1]), r"success_variance must lie in \[0, 1/4\]"),
        (np.array([0.1, np.nan, 0.1, 0.1]), "success_variance must be finite"),
    ],
)
def test_bad_success_variance_is_refused_by_name(success_variance, match):
    with pytest.raises(ValueError, match=match):
        POSTERIOR.allocate(np.full(4, 0.5), 16, 3, 8, "rloo", success_variance=success_variance)


def test_every_rule_takes_success_variance_and_only_vip_posterior_uses_it():
    p_hat = np.array([0.1, 0.5, 0.9, 0.3])
    for name, rule in rules.ALLOCATION_RULES.items():
        assert rule.uses_posterior == (name == "vip_posterior")
        if rule.uses_posterior:
            continue
        plain = rule.allocate(p_hat, 24, 3, 12, "rloo", rng=np.random.default_rng(0))
        given = rule.allocate(p_hat, 24, 3, 12, "rloo", rng=np.random.default_rng(0), success_variance=np.zeros(4))
        np.testing.assert_array_equal(given, plain)
