"""RLHF-gen (003): sampling bounds, the tau* clipping rule and the K* budget rules.

Built so far (issue 8 is open): Lemmas 2-4, alpha_{n,K,delta}, Lemma 7's clipping error,
Corollary 1, Corollary 3 with B_theta(tau), and §6.2.1 / Corollaries 4-5. The derivations
were redone here (see each docstring); they agree with the paper.
"""

from __future__ import annotations

import math

import numpy as np

from theory import _checks


def _delta(delta) -> float:
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1); got {delta}")
    return delta


def _count(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def _range_factor(beta, tau) -> float:
    """1 + 2 beta tau: the range of a per-rollout term r - beta l^tau with r in [0, 1], |l^tau| <= tau."""
    beta, tau = float(beta), float(tau)
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
    w = _checks.nonnegative("weights", weights)
    if w.shape != values.shape or not w.sum() > 0:
        raise ValueError(f"weights must have the shape of the log ratios {values.shape} and a positive sum")
    return w / w.sum()


def clipping_excess(abs_log_ratios, tau, weights=None) -> float:
    """T_theta(tau) = E[(|l| - tau)_+] = E|l - l^tau| under symmetric clipping (§6.1), from samples
    (or a finite law with ``weights``)."""
    u = np.abs(_checks.as_float_array("abs_log_ratios", abs_log_ratios)).ravel()
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
    u = np.abs(_checks.as_float_array("abs_log_ratios", abs_log_ratios)).ravel()
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
    c_p = float(_checks.nonnegative("c_prefill", c_prefill))
    c_d = float(_checks.nonnegative("c_decode", c_decode))
    if not c_d > 0:
        raise ValueError(f"c_decode must be > 0; got {c_d}")
    if (sigma_rollout2 is None) != (sigma_prompt2 is None):
        raise ValueError("give both sigma_rollout2 and sigma_prompt2 (Corollary 5) or neither (Corollary 4)")
    if sigma_rollout2 is None:
        k_cont = max(1.0, (c_p / c_d) ** (2.0 / 3.0))
    else:
        s_r = float(_checks.nonnegative("sigma_rollout2", sigma_rollout2))
        s_p = float(_checks.nonnegative("sigma_prompt2", sigma_prompt2))
        if not s_p > 0:
            raise ValueError(f"sigma_prompt2 must be > 0; got {s_p}")
        k_cont = max(1.0, math.sqrt(c_p * s_r / (c_d * s_p)))
    k = max(1, int(round(k_cont)))
    out = {"k_continuous": k_cont, "k": k}
    if budget is not None:
        n = int(math.floor(float(budget) / (c_p + k * c_d)))
        if n < 1:
            raise ValueError(f"budget must pay for at least one prompt: budget >= c_prefill + K c_decode = {c_p + k * c_d}; got {budget}")
        out["n"] = n
    return out
