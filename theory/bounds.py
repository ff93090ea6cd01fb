"""RLHF-gen (003): sampling bounds, the tau* clipping rule and the K* budget rules.

Built (simulators/bounds.py checks them, R1-R16): Lemmas 2-7 and 12, Theorems 1-2,
Corollaries 1-5 and B_theta(tau). The derivations were redone here (see each docstring);
they agree with the paper.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg

from theory import checks
from theory.importance import chi2_divergence


def _delta(delta) -> float:
    delta = checks.real("delta", delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1); got {delta}")
    return delta


def _count(name: str, value) -> int:
    number = checks.integer(name, value)
    if number < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return number


def _range_factor(beta, tau) -> float:
    """1 + 2 beta tau: the range of a per-rollout term r - beta l^tau with r in [0, 1], |l^tau| <= tau."""
    beta, tau = checks.real("beta", beta), checks.real("tau", tau)
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    if not tau >= 0:
        raise ValueError(f"tau must be >= 0; got {tau}")
    return 1.0 + 2.0 * beta * tau


def rollout_bound(n, K, delta, beta, tau) -> float:
    """Lemma 2: (1 + 2 beta tau) sqrt(log(2/delta) / (2 n K)) (Hoeffding over the n K rollouts)."""
    n, K = _count("n", n), _count("K", K)
    return _range_factor(beta, tau) * math.sqrt(math.log(2.0 / _delta(delta)) / (2.0 * n * K))


def prompt_bound(n, delta, beta, tau) -> float:
    """Lemma 3: (1 + 2 beta tau) sqrt(log(2/delta) / (2 n)) (Hoeffding over the n prompts)."""
    return _range_factor(beta, tau) * math.sqrt(math.log(2.0 / _delta(delta)) / (2.0 * _count("n", n)))


def alpha(n, K, delta) -> float:
    """alpha_{n,K,delta} = sqrt(log(4/delta)/(2n)) + sqrt(log(4/delta)/(2nK)) (§6.1): Lemmas 2 and
    3 at delta/2 each, joined by a union bound."""
    n, K = _count("n", n), _count("K", K)
    log_term = math.log(4.0 / _delta(delta))
    return math.sqrt(log_term / (2.0 * n)) + math.sqrt(log_term / (2.0 * n * K))


def sampling_bound(n, K, delta, beta, tau) -> float:
    """Lemma 4, eq. (4): (1 + 2 beta tau) alpha_{n,K,delta}."""
    return _range_factor(beta, tau) * alpha(n, K, delta)


def _weights(values: np.ndarray, weights) -> np.ndarray:
    if weights is None:
        return np.full(values.size, 1.0 / values.size)
    w = checks.nonnegative("weights", weights)
    if w.shape != values.shape or not w.sum() > 0:
        raise ValueError(f"weights must have the shape of the log ratios {values.shape} and a positive sum")
    return w / w.sum()


def clipping_excess(abs_log_ratios, tau, weights=None) -> float:
    """T_theta(tau) = E[(|l| - tau)_+] = E|l - l^tau| under symmetric clipping (§6.1), from samples
    (or a finite law with ``weights``)."""
    u = np.abs(checks.as_float_array("abs_log_ratios", abs_log_ratios)).ravel()
    if u.size == 0:
        raise ValueError("abs_log_ratios must not be empty")
    _range_factor(1.0, tau)
    return float(_weights(u, weights) @ np.maximum(u - float(tau), 0.0))


def kl_clipping_bound(beta, log_ratios, tau, weights=None) -> float:
    """Lemma 7: |J^{phi,tau} - J^phi| <= beta E|l - l^tau| = beta T_theta(tau)."""
    _range_factor(beta, tau)
    return float(beta) * clipping_excess(log_ratios, tau, weights)


def tau_objective(tau, abs_log_ratios, n, K, delta, beta, weights=None) -> float:
    """B_theta(tau) = (1 + 2 beta tau) alpha_{n,K,delta} + beta T_theta(tau): the tau-dependent
    part of the fixed-policy bound (§6.1)."""
    return _range_factor(beta, tau) * alpha(n, K, delta) + float(beta) * clipping_excess(abs_log_ratios, tau, weights)


def optimal_tau(abs_log_ratios, n, K, delta) -> float:
    """Corollary 3's calibration rule: the empirical (1 - 2 alpha)-quantile of |l|, or 0 when
    2 alpha >= 1.

    B is convex and piecewise linear in tau with slope beta (2 alpha - Pr(|l| > tau)); on an
    empirical law the minimisers are the order statistics u_(k) with k = ceil(N (1 - 2 alpha))
    (an interval when N (1 - 2 alpha) is an integer): the "inverted_cdf" quantile. beta does
    not move the minimiser.
    """
    u = np.abs(checks.as_float_array("abs_log_ratios", abs_log_ratios)).ravel()
    if u.size == 0:
        raise ValueError("abs_log_ratios must not be empty")
    a = alpha(n, K, delta)
    if 2.0 * a >= 1.0:
        return 0.0
    return float(np.quantile(u, 1.0 - 2.0 * a, method="inverted_cdf"))


def uniform_prior_kl(m) -> float:
    """Corollary 1: KL(Q || P) <= log M for a uniform prior over M candidates and Q a point mass."""
    return math.log(_count("M", m))


def optimal_rollouts(c_prefill, c_decode, sigma_rollout2=None, sigma_prompt2=None, budget=None) -> dict:
    """K* of §6.2 for the cost constraint B >= n c_prefill + n K c_decode.

    Corollary 4 (range proxy): minimise (c_p + K c_d)^(1/2) (1 + K^(-1/2)); the stationarity
    condition c_d (K^(3/2) + K) = c_p + K c_d gives K = (c_p / c_d)^(2/3). With c_p = 0 this is
    §6.2.1's uniform-cost K* = 1. Corollary 5 (two-stage variance proxy): minimise
    (c_p + K c_d)(sigma_p^2 + sigma_r^2 / K), giving K = sqrt(c_p sigma_r^2 / (c_d sigma_p^2))
    (Neyman's two-stage allocation). Both clipped below at 1.

    Returns ``k_continuous``, ``k`` (rounded, >= 1) and, with ``budget``, ``n`` = the number of
    prompts the budget pays for at that K (floor of B / (c_p + K c_d), at least 1 is required).
    """
    c_p = float(checks.nonnegative("c_prefill", c_prefill))
    c_d = float(checks.nonnegative("c_decode", c_decode))
    if not c_d > 0:
        raise ValueError(f"c_decode must be > 0; got {c_d}")
    if (sigma_rollout2 is None) != (sigma_prompt2 is None):
        raise ValueError("give both sigma_rollout2 and sigma_prompt2 (Corollary 5) or neither (Corollary 4)")
    if sigma_rollout2 is None:
        k_cont = max(1.0, (c_p / c_d) ** (2.0 / 3.0))
    else:
        s_r = float(checks.nonnegative("sigma_rollout2", sigma_rollout2))
        s_p = float(checks.nonnegative("sigma_prompt2", sigma_prompt2))
        if not s_p > 0:
            raise ValueError(f"sigma_prompt2 must be > 0; got {s_p}")
        k_cont = max(1.0, math.sqrt(c_p * s_r / (c_d * s_p)))
    k = max(1, int(round(k_cont)))
    out = {"k_continuous": k_cont, "k": k}
    if budget is not None:
        n = int(math.floor(float(budget) / (c_p + k * c_d)))
        if n < 1:
            raise ValueError(
                "budget must pay for at least one prompt: "
                f"budget >= c_prefill + K c_decode = {c_p + k * c_d}; got {budget}"
            )
        out["n"] = n
    return out


# --- reward shift (Lemmas 5-6), the full bounds (Theorems 1-2), OU (Corollary 2) ---------------


def _distribution(name: str, p) -> np.ndarray:
    p = checks.nonnegative(name, p)
    if not np.isclose(p.sum(), 1.0, rtol=1e-9, atol=1e-12):
        raise ValueError(f"{name} must sum to 1 (a distribution); got {p.sum()}")
    return p


def coverage_coefficient(p_theta, p_train) -> float:
    """C(theta) = sqrt(1 + chi2(D_theta || D_train)) (Definition 1) for two finite distributions
    over the same (prompt, response) pairs; inf when D_theta is not absolutely continuous."""
    p, q = _distribution("p_theta", p_theta), _distribution("p_train", p_train)
    if p.shape != q.shape:
        raise ValueError(f"p_theta and p_train must have one shape; got {p.shape} and {q.shape}")
    return math.sqrt(1.0 + float(chi2_divergence(p, q)))


def reward_shift_bound(chi2, l_train) -> float:
    """Lemma 5: |J^phi - J*| <= sqrt(1 + chi2) sqrt(L_train^(2)) (Cauchy-Schwarz after the change of measure)."""
    chi2 = float(checks.nonnegative("chi2", chi2))
    return math.sqrt(1.0 + chi2) * math.sqrt(float(checks.nonnegative("l_train", l_train)))


def prompt_coverage(rho, rho_label) -> float:
    """Lemma 6: C_prompt = (E_{rho_label}[(rho / rho_label)^2])^(1/2)."""
    return coverage_coefficient(rho, rho_label)


def policy_coverage(pi_theta, pi_ref, rho_label) -> float:
    """Lemma 6: C_pol(theta) = sup over prompts with rho_label > 0 of (E_{pi_ref}[(pi_theta / pi_ref)^2])^(1/2).

    ``pi_theta``, ``pi_ref``: (prompts, responses), one distribution per row."""
    p, q = checks.nonnegative("pi_theta", pi_theta), checks.nonnegative("pi_ref", pi_ref)
    w = checks.nonnegative("rho_label", rho_label)
    if p.ndim != 2 or p.shape != q.shape or w.shape != (p.shape[0],):
        raise ValueError(
            "pi_theta and pi_ref must be (prompts, responses) of one shape and rho_label (prompts,); "
            f"got {p.shape}, {q.shape}, {w.shape}"
        )
    rows = [coverage_coefficient(p[i], q[i]) for i in np.flatnonzero(w > 0)]
    return max(rows)


def kl_estimate_bound(n, K, delta, tau) -> float:
    """Lemma 12: |kappa_hat - kappa| <= 2 tau alpha_{n,K,delta} (each clipped log ratio spans 2 tau)."""
    if not float(tau) >= 0:
        raise ValueError(f"tau must be >= 0; got {tau}")
    return 2.0 * float(tau) * alpha(n, K, delta)


def fixed_policy_bound(n, K, delta, beta, tau, coverage, l_train, clip_error) -> dict:
    """Theorem 1, eq. (7): sampling error (Lemma 4) + reward shift (Lemma 5) + beta x clipping
    error (Lemma 7, ``clip_error`` = E|l - l^tau| under D_theta). Returns the three terms and their sum."""
    coverage = float(checks.at_least("coverage", coverage, 1.0))
    terms = {
        "sampling": sampling_bound(n, K, delta, beta, tau),
        "reward_shift": coverage * math.sqrt(float(checks.nonnegative("l_train", l_train))),
        "clipping": float(beta) * float(checks.nonnegative("clip_error", clip_error)),
    }
    terms["total"] = sum(terms.values())
    return terms


def pac_bayes_bound(n, K, delta, beta, tau, kl_qp, coverage_mean, l_train, clip_error_mean) -> dict:
    """Theorem 2: as Theorem 1 with log(4/delta) replaced by KL(Q || P) + log(8/delta) in the
    sampling term and the other two terms averaged over theta ~ Q; holds for all Q at once."""
    n, K = _count("n", n), _count("K", K)
    log_term = float(checks.nonnegative("kl_qp", kl_qp)) + math.log(8.0 / _delta(delta))
    sampling = _range_factor(beta, tau) * (math.sqrt(log_term / (2.0 * n)) + math.sqrt(log_term / (2.0 * n * K)))
    coverage = float(checks.at_least("coverage_mean", coverage_mean, 1.0))
    terms = {
        "sampling": sampling,
        "reward_shift": coverage * math.sqrt(float(checks.nonnegative("l_train", l_train))),
        "clipping": float(beta) * float(checks.nonnegative("clip_error_mean", clip_error_mean)),
    }
    terms["total"] = sum(terms.values())
    return terms


def gaussian_kl(mu_q, cov_q, mu_p, cov_p) -> float:
    """Lemma 13: KL(N(mu_q, cov_q) || N(mu_p, cov_p)), by Cholesky factors (no inverse)."""
    mu_q, mu_p = (
        np.atleast_1d(checks.as_float_array("mu_q", mu_q)),
        np.atleast_1d(checks.as_float_array("mu_p", mu_p)),
    )
    cov_q, cov_p = (
        np.atleast_2d(checks.as_float_array("cov_q", cov_q)),
        np.atleast_2d(checks.as_float_array("cov_p", cov_p)),
    )
    d = mu_q.size
    if mu_p.shape != (d,) or cov_q.shape != (d, d) or cov_p.shape != (d, d):
        raise ValueError(
            "shapes must be (d,), (d, d), (d,), (d, d) for one d; "
            f"got {mu_q.shape}, {cov_q.shape}, {mu_p.shape}, {cov_p.shape}"
        )
    chol_p, chol_q = linalg.cholesky(cov_p, lower=True), linalg.cholesky(cov_q, lower=True)
    trace = np.sum(linalg.solve_triangular(chol_p, chol_q, lower=True) ** 2)
    maha = np.sum(linalg.solve_triangular(chol_p, mu_q - mu_p, lower=True) ** 2)
    logdet = 2.0 * (np.sum(np.log(np.diag(chol_p))) - np.sum(np.log(np.diag(chol_q))))
    return float(0.5 * (trace + maha - d + logdet))


def ou_stationary_covariance(hessian, sigma_g, eps) -> np.ndarray:
    """Sigma solving H Sigma + Sigma H = eps Sigma_g (§5.2, the OU stationary law), by
    scipy.linalg.solve_continuous_lyapunov.

    The law exists only for a stable drift -H: every eigenvalue of H must have a positive
    real part (H positive definite), else the Lyapunov equation still has a solution but it
    is no covariance (it can be indefinite). Sigma_g must be a covariance (symmetric, >= 0)
    and eps > 0.
    """
    h, g = (
        np.atleast_2d(checks.as_float_array("hessian", hessian)),
        np.atleast_2d(checks.as_float_array("sigma_g", sigma_g)),
    )
    if h.ndim != 2 or h.shape[0] != h.shape[1] or g.shape != h.shape:
        raise ValueError(f"hessian and sigma_g must be square matrices of one shape; got {h.shape} and {g.shape}")
    if not (math.isfinite(float(eps)) and float(eps) > 0):
        raise ValueError(f"eps must be a finite number > 0; got {eps}")
    lowest = float(np.linalg.eigvals(h).real.min())
    if lowest <= 0:
        raise ValueError(
            "hessian must be positive definite (the OU process has a stationary law only for a stable drift -H); "
            f"got smallest eigenvalue (real part) {lowest:.4g}"
        )
    g_eigs = np.linalg.eigvalsh(g)
    if not np.allclose(g, g.T) or g_eigs.min() < -1e-12 * max(abs(g_eigs).max(), 1.0):
        raise ValueError(
            "sigma_g must be a covariance matrix (symmetric, positive semi-definite); "
            f"got smallest eigenvalue {g_eigs.min():.4g}"
        )
    return linalg.solve_continuous_lyapunov(h, float(eps) * g)


def ou_kl_bound(theta_hat, theta0, prior_cov, sigma_g, eps, m, M) -> float:
    """Corollary 2, eq. (8): with H and Sigma_g commuting, Sigma = (eps/2) H^-1 Sigma_g lies between
    eps/(2M) Sigma_g and eps/(2m) Sigma_g (Lemma 16), so KL(N(theta_hat, Sigma) || N(theta0, Lambda)) is at most
    1/2 [(theta_hat - theta0)' Lambda^-1 (theta_hat - theta0) + eps/(2m) tr(Lambda^-1 Sigma_g) - d
    + log det Lambda - log det Sigma_g - d log(eps/(2M))]."""
    if not 0 < float(m) <= float(M):
        raise ValueError(f"m and M must satisfy 0 < m <= M; got m = {m}, M = {M}")
    if not float(eps) > 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    theta_hat, theta0 = (
        np.atleast_1d(checks.as_float_array("theta_hat", theta_hat)),
        np.atleast_1d(checks.as_float_array("theta0", theta0)),
    )
    lam, g = (
        np.atleast_2d(checks.as_float_array("prior_cov", prior_cov)),
        np.atleast_2d(checks.as_float_array("sigma_g", sigma_g)),
    )
    d = theta_hat.size
    chol = linalg.cholesky(lam, lower=True)
    maha = np.sum(linalg.solve_triangular(chol, theta_hat - theta0, lower=True) ** 2)
    trace = np.trace(linalg.cho_solve((chol, True), g))
    logdet_lam = 2.0 * np.sum(np.log(np.diag(chol)))
    logdet_g = np.linalg.slogdet(g)[1]
    return float(
        0.5
        * (
            maha
            + float(eps) / (2 * float(m)) * trace
            - d
            + logdet_lam
            - logdet_g
            - d * math.log(float(eps) / (2 * float(M)))
        )
    )
