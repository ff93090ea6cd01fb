"""RLHF-gen's bounds for a trained policy, in the exact world of :mod:`simulators.rlhf_world`.

The ``bounds_pac_bayes`` and ``bounds_ou`` checks of :mod:`simulators.bounds` run these.

- R9-R10 (Theorem 2, Corollary 1): M = 16 checkpoints, the one with the largest J_hat chosen on
  the same draw; the violation rate of the bound with KL = log M, and KL <= log M for a
  Gibbs posterior. No control: every bound here is loose by > 5x, so no plausible wrong
  version (log(4/delta) without the KL) is visible to a violation test; the looseness is
  reported instead.
- R11 (Lemma 16, Corollary 2): SGD's stationary variance against the Lyapunov solution
  (z-tests; control: without its 1/2), the eigenvalue sandwich and the KL bound, exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import log_softmax, rel_entr, softmax

from simulators.bound_rows import BETA, DELTA, EXACT, TAU, violation_row
from simulators.ledger import ClaimResult, claim, control, report
from simulators.mc import variance_se, z_score
from simulators.registry import RunConfig
from simulators.rlhf_world import RLHFWorld, make_world
from theory.bounds import gaussian_kl, ou_kl_bound, ou_stationary_covariance, pac_bayes_bound, uniform_prior_kl

OU_DIM, OU_EPS = 4, 0.01  # quadratic's dimension and SGD's constant step
CHECKPOINTS, PB_N, PB_K = 16, 16, 4  # R9-R10: M checkpoints, n prompts x K rollouts per draw
GIBBS_TEMPERATURE = 20.0  # Q proportional to exp(20 J_hat): a soft data-dependent posterior


def _commuting_pair(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """H = U diag(h) U', Sigma_g = U diag(g) U' (Corollary 2's commuting case); returns U, h, g, H, Sigma_g."""
    u = np.linalg.qr(rng.normal(size=(OU_DIM, OU_DIM)))[0]
    h, g = rng.uniform(0.5, 2.0, OU_DIM), rng.uniform(0.2, 3.0, OU_DIM)
    return u, h, g, (u * h) @ u.T, (u * g) @ u.T


def run_ou(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """R11: constant-step SGD theta <- theta - eps (H theta + xi), xi ~ N(0, Sigma_g), on many
    independent chains run for 8 relaxation times; the stationary variance along each eigen-
    direction against the Lyapunov solution (control: without its factor 1/2); Lemma 16's
    sandwich and the KL bound (8) against the exact Gaussian KL, on random instances."""
    chains = 20_000 if config.full else 4_000
    u, h, g, hess, sigma_g = _commuting_pair(rng)
    lyapunov = ou_stationary_covariance(hess, sigma_g, OU_EPS)
    noise_chol = np.linalg.cholesky(sigma_g)
    theta = np.zeros((chains, OU_DIM))
    for _ in range(int(np.ceil(8.0 / (OU_EPS * h.min())))):
        theta -= OU_EPS * (theta @ hess + rng.standard_normal((chains, OU_DIM)) @ noise_chol.T)
    var, se = variance_se(theta @ u, axis=0)  # coordinates along the eigenvectors are independent
    theory = np.diag(u.T @ lyapunov @ u)
    z = z_score(var, se, theory)
    z_control = z_score(var, se, 2.0 * theory)
    rows = [
        claim(
            "R11",
            f"SGD stationary variance = Lyapunov solution ({OU_DIM} eigendirections, eps = {OU_EPS})",
            max_abs_z=float(np.max(np.abs(z))),
            estimate=float(var[0]),
            se=float(se[0]),
            theory=float(theory[0]),
            details={"variance": var, "se": se, "theory": theory},
        ),
        control(
            "R11",
            "the same against eps Sigma_g H^-1 (without the 1/2)",
            min_abs_z=float(np.min(np.abs(z_control))),
            estimate=float(var[0]),
            se=float(se[0]),
            theory=float(2 * theory[0]),
        ),
    ]
    sandwich, kl_ratio = [], []
    for _ in range(200 if config.full else 50):
        u, h, g, hess, sigma_g = _commuting_pair(rng)
        cov = ou_stationary_covariance(hess, sigma_g, OU_EPS)
        lower = np.linalg.eigvalsh(cov - OU_EPS / (2 * h.max()) * sigma_g).min()
        upper = np.linalg.eigvalsh(OU_EPS / (2 * h.min()) * sigma_g - cov).min()
        sandwich.append(min(lower, upper))
        theta_hat, theta0 = rng.normal(size=OU_DIM), rng.normal(size=OU_DIM)
        prior = np.diag(rng.uniform(0.5, 2.0, OU_DIM))
        exact = gaussian_kl(theta_hat, cov, theta0, prior)
        kl_ratio.append(ou_kl_bound(theta_hat, theta0, prior, sigma_g, OU_EPS, h.min(), h.max()) / exact)
    low = float(np.min(sandwich))
    rows.append(
        claim(
            "R11",
            f"Lemma 16: eps/(2M) Sigma_g <= Sigma <= eps/(2m) Sigma_g, min eigenvalue of the gaps over {len(sandwich)} "
            "instances",
            at_least=-EXACT,
            statistic=low,
            stat_name="min eigenvalue",
            estimate=low,
            theory=0.0,
        )
    )
    ratio = float(np.min(kl_ratio))
    rows.append(
        claim(
            "R11",
            f"Corollary 2 (8): KL bound / exact KL >= 1 (min over {len(kl_ratio)}; max {max(kl_ratio):.3g})",
            at_least=1.0 - EXACT,
            statistic=ratio,
            stat_name="min ratio",
            estimate=ratio,
            theory=1.0,
            details={"ratios": kl_ratio},
        )
    )
    return rows


def _checkpoints(world: RLHFWorld, rng) -> list[RLHFWorld]:
    """M policies around pi_ref (distances 0.25-2.5, heavy-tailed), sharing the world's prompts and rewards."""
    return [
        dataclasses.replace(
            world,
            log_pi_theta=log_softmax(world.log_pi_ref + d * rng.standard_t(2.0, size=world.log_pi_ref.shape), axis=1),
        )
        for d in np.linspace(0.25, 2.5, CHECKPOINTS)
    ]


def run_pac_bayes(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """R9-R10: on each draw S = (prompts, uniforms), every checkpoint's rollouts are its inverse-CDF
    draws from the same uniforms; the checkpoint with the largest J_hat is selected (a posterior
    Q = point mass chosen on S) and Theorem 2's bound with KL = log M is compared with its actual
    error |J_hat - J*|. R10: KL(Q || uniform) <= log M for the point mass and for a Gibbs posterior."""
    replications = 10_000 if config.full else 2_000
    base = make_world(rng)
    models = _checkpoints(base, rng)
    prompts = rng.choice(base.rho.size, size=(replications, PB_N), p=base.rho)
    u = rng.random((replications, PB_N, PB_K))
    j_hat, j_star, bound = [], [], []
    for model in models:
        responses = model.responses(prompts, u)
        j_hat.append(model.per_rollout(model.r_hat, BETA, TAU)[prompts[..., None], responses].mean(axis=(1, 2)))
        j_star.append(model.objective(model.r_star, BETA, None))
        bound.append(
            pac_bayes_bound(
                PB_N,
                PB_K,
                DELTA,
                BETA,
                TAU,
                uniform_prior_kl(CHECKPOINTS),
                model.coverage(),
                model.l_train(),
                model.clip_error(TAU),
            )["total"]
        )
    j_hat, j_star, bound = np.array(j_hat).T, np.array(j_star), np.array(bound)  # (R, M), (M,), (M,)
    chosen = np.argmax(j_hat, axis=1)
    rows_idx = np.arange(replications)
    errors = np.abs(j_hat[rows_idx, chosen] - j_star[chosen])
    cell = {"M": CHECKPOINTS, "n": PB_N, "K": PB_K, "beta": BETA, "tau": TAU, "delta": DELTA}
    selected = violation_row(
        "R9",
        "claim",
        f"Theorem 2 (KL = log {CHECKPOINTS}) exceeded by the selected checkpoint's |J_hat - J*|, n={PB_N}, K={PB_K}",
        errors,
        bound[chosen],
        cell,
    )
    j_tau = np.array([m.objective(m.r_hat, BETA, TAU) for m in models])
    optimism = j_hat[rows_idx, chosen] - j_tau[chosen]
    gibbs = softmax(GIBBS_TEMPERATURE * j_hat, axis=1)
    kl_gibbs = np.sum(rel_entr(gibbs, 1.0 / CHECKPOINTS), axis=1)
    return [
        selected,
        report(
            "R9",
            f"selection optimism E[J_hat - J^tau] of the chosen checkpoint: {optimism.mean():.3f} +- "
            f"{optimism.std(ddof=1) / np.sqrt(replications):.3f}; bound / (1-delta)-quantile of the error "
            f"{selected.details['tightness']:.2f}",
            details=cell,
            estimate=float(optimism.mean()),
        ),
        claim(
            "R10",
            "Corollary 1: KL(Q || uniform) <= log M = uniform_prior_kl(M) for a Gibbs posterior "
            f"(max over {replications} draws)",
            at_most=EXACT,
            statistic=float(kl_gibbs.max() - uniform_prior_kl(CHECKPOINTS)),
            stat_name="max KL - log M",
            estimate=float(kl_gibbs.max()),
            theory=uniform_prior_kl(CHECKPOINTS),
        ),
    ]
