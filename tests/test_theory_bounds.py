"""theory/bounds.py (RLHF-gen): the parts built so far."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.bounds import (
    alpha,
    clipping_excess,
    kl_clipping_bound,
    optimal_rollouts,
    optimal_tau,
    prompt_bound,
    rollout_bound,
    sampling_bound,
    tau_objective,
    uniform_prior_kl,
)


def test_alpha_is_lemmas_2_and_3_at_half_delta():
    n, k, d = 50, 8, 0.1
    assert alpha(n, k, d) * 1.5 == pytest.approx(
        prompt_bound(n, d / 2, 0.25, 1.0) + rollout_bound(n, k, d / 2, 0.25, 1.0)
    )
    assert sampling_bound(n, k, d, 0.25, 1.0) == pytest.approx(1.5 * alpha(n, k, d))


@given(st.integers(1, 10_000), st.integers(1, 64), st.floats(1e-6, 0.999))
@settings(max_examples=100, deadline=None)
def test_alpha_decreases_in_n_k_and_delta(n, k, d):
    a = alpha(n, k, d)
    assert alpha(n + 1, k, d) < a and alpha(n, k + 1, d) < a
    assert alpha(n, k, min(0.9999, d * 1.01)) <= a


def test_clipping_excess_is_the_clipping_error():
    rng = np.random.default_rng(0)
    ell = rng.standard_t(2, size=1000)
    tau = 0.7
    assert clipping_excess(np.abs(ell), tau) == pytest.approx(np.mean(np.abs(ell - np.clip(ell, -tau, tau))))
    assert kl_clipping_bound(0.1, ell, tau) == pytest.approx(0.1 * clipping_excess(ell, tau))
    assert clipping_excess([1.0, 3.0], 2.0, weights=[3.0, 1.0]) == pytest.approx(0.25)


@given(st.integers(0, 2**32 - 1), st.integers(5, 400), st.integers(1, 16), st.floats(0.01, 0.5), st.floats(0.01, 2.0))
@settings(max_examples=60, deadline=None)
def test_optimal_tau_minimises_the_empirical_objective(seed, n, k, delta, beta):
    u = np.abs(np.random.default_rng(seed).standard_t(3, size=200))
    tau = optimal_tau(u, n, k, delta)
    grid = np.concatenate([np.linspace(0, u.max() * 1.1, 400), u])
    best = min(tau_objective(t, u, n, k, delta, beta) for t in grid)
    assert tau_objective(tau, u, n, k, delta, beta) <= best + 1e-12
    if 2 * alpha(n, k, delta) < 1:
        assert np.mean(u > tau) <= 2 * alpha(n, k, delta) <= np.mean(u >= tau)


def test_optimal_tau_grows_with_the_budget_and_is_zero_when_alpha_is_large():
    u = np.abs(np.random.default_rng(1).standard_normal(5000))
    taus = [optimal_tau(u, n, 4, 0.05) for n in (10, 100, 1000, 10_000)]
    assert taus[0] == 0.0  # 2 alpha >= 1 at n = 10
    assert all(a <= b for a, b in zip(taus, taus[1:])) and taus[-1] > 0


@given(st.floats(0.0, 1e4), st.floats(1e-3, 10.0))
@settings(max_examples=100, deadline=None)
def test_rollout_rules(c_p, c_d):
    k4 = optimal_rollouts(c_p, c_d)["k_continuous"]
    assert k4 >= 1
    k_grid = np.linspace(1, max(2 * k4, 2), 4001)
    proxy = np.sqrt(c_p + k_grid * c_d) * (1 + k_grid**-0.5)
    assert k4 == pytest.approx(k_grid[np.argmin(proxy)], abs=max(1e-3 * k4, 2 * (k_grid[1] - k_grid[0])))


def test_rollout_rule_values():
    assert optimal_rollouts(0.0, 1.0)["k"] == 1  # §6.2.1: uniform cost
    assert optimal_rollouts(8.0, 1.0)["k_continuous"] == pytest.approx(4.0)  # (8)^(2/3)
    assert optimal_rollouts(9.0, 1.0, sigma_rollout2=4.0, sigma_prompt2=1.0)["k_continuous"] == pytest.approx(6.0)
    out = optimal_rollouts(8.0, 1.0, budget=120)
    assert out == {"k_continuous": pytest.approx(4.0), "k": 4, "n": 10}
    assert uniform_prior_kl(20) == pytest.approx(math.log(20))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: alpha(0, 1, 0.1), "n must be an integer >= 1"),
        (lambda: alpha(5, 0, 0.1), "K must be an integer >= 1"),
        (lambda: alpha(5, 2, 1.0), r"delta must lie in \(0, 1\)"),
        (lambda: sampling_bound(5, 2, 0.1, 0.0, 1.0), "beta must be > 0"),
        (lambda: sampling_bound(5, 2, 0.1, 0.1, -1.0), "tau must be >= 0"),
        (lambda: optimal_tau([], 5, 2, 0.1), "must not be empty"),
        (lambda: optimal_tau([np.nan], 5, 2, 0.1), "must be finite"),
        (lambda: optimal_rollouts(-1.0, 1.0), "c_prefill must be >= 0"),
        (lambda: optimal_rollouts(1.0, 0.0), "c_decode must be > 0"),
        (lambda: optimal_rollouts(1.0, 1.0, sigma_rollout2=1.0), "give both"),
        (lambda: optimal_rollouts(8.0, 1.0, budget=5), "budget must pay for at least one prompt"),
        (lambda: uniform_prior_kl(0), "M must be an integer >= 1"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_reward_shift_and_coverage_factorisation_on_a_finite_world():
    from theory.bounds import coverage_coefficient, policy_coverage, prompt_coverage, reward_shift_bound

    rng = np.random.default_rng(5)
    prompts, responses = 6, 5
    rho, rho_label = rng.dirichlet(np.ones(prompts)), rng.dirichlet(np.ones(prompts))
    pi_ref, pi_theta = rng.dirichlet(np.ones(responses), size=prompts), rng.dirichlet(np.ones(responses), size=prompts)
    d_theta, d_train = (rho[:, None] * pi_theta).ravel(), (rho_label[:, None] * pi_ref).ravel()
    c = coverage_coefficient(d_theta, d_train)
    assert c <= prompt_coverage(rho, rho_label) * policy_coverage(pi_theta, pi_ref, rho_label) + 1e-12  # Lemma 6
    error = rng.uniform(-0.3, 0.3, size=d_theta.size)  # e_phi = r_hat - r*
    shift = abs(d_theta @ error)  # J^phi - J* = E_{D_theta}[e_phi]
    assert shift <= reward_shift_bound(c**2 - 1, d_train @ error**2) + 1e-12  # Lemma 5
    assert coverage_coefficient([0.5, 0.5], [1.0, 0.0]) == math.inf


def test_theorem_terms_and_the_pac_bayes_price():
    from theory.bounds import fixed_policy_bound, kl_estimate_bound, pac_bayes_bound

    t1 = fixed_policy_bound(100, 4, 0.05, 0.1, 2.0, coverage=1.5, l_train=0.04, clip_error=0.2)
    assert t1["total"] == pytest.approx(sampling_bound(100, 4, 0.05, 0.1, 2.0) + 1.5 * 0.2 + 0.1 * 0.2)
    t2 = pac_bayes_bound(100, 4, 0.05, 0.1, 2.0, kl_qp=0.0, coverage_mean=1.5, l_train=0.04, clip_error_mean=0.2)
    assert t2["sampling"] > t1["sampling"]  # log(8/delta) > log(4/delta) even at KL = 0
    assert kl_estimate_bound(100, 4, 0.05, 2.0) == pytest.approx(4.0 * alpha(100, 4, 0.05))


def test_ou_bound_dominates_the_exact_gaussian_kl():
    from theory.bounds import gaussian_kl, ou_kl_bound, ou_stationary_covariance

    rng = np.random.default_rng(6)
    d = 4
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    h_eig, g_eig = rng.uniform(0.5, 3.0, d), rng.uniform(0.2, 2.0, d)
    hessian, sigma_g = basis @ np.diag(h_eig) @ basis.T, basis @ np.diag(g_eig) @ basis.T  # commuting
    eps = 0.01
    sigma = ou_stationary_covariance(hessian, sigma_g, eps)
    np.testing.assert_allclose(hessian @ sigma + sigma @ hessian, eps * sigma_g, atol=1e-12)
    np.testing.assert_allclose(sigma, eps / 2 * np.linalg.solve(hessian, sigma_g), atol=1e-12)
    theta_hat, theta0, lam = rng.standard_normal(d), np.zeros(d), np.eye(d) * 2.0
    exact = gaussian_kl(theta_hat, sigma, theta0, lam)
    bound = ou_kl_bound(theta_hat, theta0, lam, sigma_g, eps, h_eig.min(), h_eig.max())
    assert exact <= bound + 1e-9
    assert gaussian_kl(theta0, lam, theta0, lam) == pytest.approx(0.0, abs=1e-12)
    assert gaussian_kl([1.0], [[1.0]], [0.0], [[2.0]]) == pytest.approx(0.5 * (0.5 + 0.5 - 1 + math.log(2.0)))
    with pytest.raises(ValueError, match="0 < m <= M"):
        ou_kl_bound(theta_hat, theta0, lam, sigma_g, eps, 2.0, 1.0)


@pytest.mark.parametrize("hessian, lowest", [([[1.0, 0.0], [0.0, -0.5]], "-0.5"), ([[1.0, 2.0], [2.0, 1.0]], "-1")])
def test_ou_stationary_covariance_refuses_an_indefinite_hessian(hessian, lowest):
    """For an indefinite H the Lyapunov equation still has a solution, but not a covariance."""
    from scipy import linalg

    from theory.bounds import ou_stationary_covariance

    assert np.linalg.eigvalsh(linalg.solve_continuous_lyapunov(np.asarray(hessian), 0.01 * np.eye(2))).min() < 0
    with pytest.raises(ValueError, match=rf"hessian must be positive definite .* eigenvalue \(real part\) {lowest}$"):
        ou_stationary_covariance(hessian, np.eye(2), 0.01)


@pytest.mark.parametrize(
    "sigma_g, eps, match",
    [
        ([[1.0, 0.0], [0.0, -1.0]], 0.01, r"sigma_g must be a covariance matrix .* smallest eigenvalue -1"),
        (np.eye(3), 0.01, r"hessian and sigma_g must be square matrices of one shape"),
        (np.eye(2), float("nan"), r"eps must be a finite number > 0; got nan"),
        (np.eye(2), 0.0, r"eps must be a finite number > 0; got 0"),
    ],
)
def test_ou_stationary_covariance_bad_noise_or_step(sigma_g, eps, match):
    from theory.bounds import ou_stationary_covariance

    with pytest.raises(ValueError, match=match):
        ou_stationary_covariance(np.eye(2), sigma_g, eps)
