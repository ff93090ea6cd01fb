"""Checks of RLHF-gen's bounds (003) in the exact world of :mod:`simulators.rlhf_world`.

``python -m simulators.bounds [--full]``. Claims R1-R16.

- R1 (Lemma 1): the three-term decomposition holds on every draw (an identity plus the
  triangle inequality; checked to floating-point precision).
- R2-R4, R8, R13: draw n prompts x K rollouts many times; the rate at which each bound is
  exceeded is compared with delta by z = (rate - delta) / sqrt(delta (1 - delta) / N): a
  claim passes at z < 4. Tightness (reported): the bound over the (1 - delta)-quantile of
  the actual error; a bound above 1 + 2 beta tau (the range of the per-rollout term) is vacuous.
- Controls: Lemma 2 with its independence assumption violated (the K rollouts of a prompt
  are copies of one, K = 1,024), and Lemma 4 without its factor 1 + 2 beta tau at beta = 10, n = 4; the same
  test rejects both. (At beta = 1 the dropped factor is not visible: the bounds are loose by
  a factor >= 5, as large as the factor.)
- R9-R11 (Theorem 2, Corollaries 1-2, Lemma 16): :mod:`simulators.bounds_trained`.
- R12 (Corollary 3): tau* minimises B_theta(tau) on the sample (exact); reported: the actual
  mean error at tau* against the tau that minimises it in the world.
- R14-R16 (§6.2): the exact MSE of each K at equal prefill/decode cost (checked against
  simulation) and its best K, against K* = 1, Corollary 4 and Corollary 5.
- R5-R7: the reward-shift and clipping inequalities and the Lemma 6 factorisation, exactly.
"""

from __future__ import annotations

import numpy as np

from simulators.bound_rows import BETA, DELTA, EXACT, TAU, violation_row
from simulators.bounds_trained import run_ou, run_pac_bayes
from simulators.ledger import ClaimResult, claim, control, report
from simulators.registry import Check, RunConfig
from simulators.rlhf_world import RLHFWorld, make_world
from theory.bounds import (
    alpha,
    fixed_policy_bound,
    kl_clipping_bound,
    kl_estimate_bound,
    optimal_rollouts,
    optimal_tau,
    policy_coverage,
    prompt_bound,
    prompt_coverage,
    reward_shift_bound,
    rollout_bound,
    sampling_bound,
    tau_objective,
)
from theory.importance import chi2_divergence

DISTANCES = (0.5, 2.0)  # scale of pi_theta's heavy-tailed logit perturbation
SIZES = ((8, 4), (32, 1), (4, 16))  # (n, K)
COPIES_CELL = (4, 1024)  # the copies control: K identical rollouts per prompt
DROPPED_CELL, STRONG_BETA = (4, 16), 10.0  # the dropped-factor control: small n, strong KL weight
TAU_CELLS = (16, 128, 1024)  # n for the tau* rule, with TAU_K rollouts each
TAU_K = 4
TAU_GRID = np.linspace(0.0, 8.0, 81)
COST_RATIOS = (0.0, 1.0, 8.0, 64.0, 512.0)  # c_prefill / c_decode, c_decode = 1
BUDGET = 8192.0
K_GRID = np.arange(1, 129)


def _estimates(
    world: RLHFWorld, reward: np.ndarray, n: int, K: int, replications: int, rng, beta: float = BETA
) -> dict:
    """Per replication: J_hat_{n,K}, J_hat_{n,inf}, and the clipped-KL average kappa_hat."""
    prompts, responses = world.sample(n, K, replications, rng)
    z = world.per_rollout(reward, beta, TAU)
    clipped = np.clip(world.log_ratio, -TAU, TAU)
    conditional = world.conditional_mean(z)
    return {
        "j_nk": z[prompts[..., None], responses].mean(axis=(1, 2)),
        "j_ninf": conditional[prompts].mean(axis=1),
        "kappa_nk": clipped[prompts[..., None], responses].mean(axis=(1, 2)),
    }


def _copies_control(world: RLHFWorld, replications: int, rng, distance: float) -> ClaimResult:
    """Lemma 2 when its independence assumption fails: the K rollouts of a prompt are one
    rollout repeated, so the error is that of n draws, not n K."""
    n, K = COPIES_CELL
    prompts, responses = world.sample(n, 1, replications, rng)
    z = world.per_rollout(world.r_hat, BETA, TAU)
    conditional = world.conditional_mean(z)
    errors = np.abs(
        z[prompts, responses[..., 0]].mean(axis=1) - conditional[prompts].mean(axis=1)
    )  # K copies average to one
    cell = {"distance": distance, "n": n, "K": K, "beta": BETA, "tau": TAU, "delta": DELTA}
    return violation_row(
        "R2",
        "control",
        f"Lemma 2 with K={K} copies of one rollout, d={distance}, n={n}",
        errors,
        rollout_bound(n, K, DELTA, BETA, TAU),
        cell,
    )


def _dropped_factor_control(world: RLHFWorld, replications: int, rng, distance: float) -> list[ClaimResult]:
    """Lemma 4 with and without its range factor 1 + 2 beta tau, at a strong KL weight
    (beta = STRONG_BETA), where the clipped KL term's spread, not the reward's, sets the error:
    the claim must hold and the control must be rejected on the same draws."""
    n, K = DROPPED_CELL
    est = _estimates(world, world.r_hat, n, K, replications, rng, beta=STRONG_BETA)
    j_tau = world.objective(world.r_hat, STRONG_BETA, TAU)
    cell = {"distance": distance, "n": n, "K": K, "beta": STRONG_BETA, "tau": TAU, "delta": DELTA}
    errors, label = np.abs(est["j_nk"] - j_tau), f"beta={STRONG_BETA:g}, d={distance}, n={n}, K={K}"
    return [
        violation_row(
            "R4",
            "claim",
            f"Lemma 4 sampling error > bound, {label}",
            errors,
            sampling_bound(n, K, DELTA, STRONG_BETA, TAU),
            cell,
        ),
        violation_row("R4", "control", f"Lemma 4 without 1+2 beta tau, {label}", errors, alpha(n, K, DELTA), cell),
    ]


def run_sampling(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    replications = 20_000 if config.full else 4_000
    results, decomposition_gap = [], 0.0
    for distance in DISTANCES:
        world = make_world(rng, distance=distance)
        j_tau = world.objective(world.r_hat, BETA, TAU)
        j_phi = world.objective(world.r_hat, BETA, None)
        j_star = world.objective(world.r_star, BETA, None)
        kappa = float(np.sum(world.d_theta * np.clip(world.log_ratio, -TAU, TAU)))
        clip_error = world.clip_error(TAU)
        coverage = world.coverage()
        for n, K in SIZES:
            est = _estimates(world, world.r_hat, n, K, replications, rng)
            cell = {"distance": distance, "n": n, "K": K, "beta": BETA, "tau": TAU, "delta": DELTA}
            label = f"d={distance}, n={n}, K={K}"
            total = np.abs(est["j_nk"] - j_star)
            three = np.abs(est["j_nk"] - j_tau) + abs(j_phi - j_star) + abs(j_tau - j_phi)
            decomposition_gap = max(decomposition_gap, float(np.max(total - three)))
            theorem1 = fixed_policy_bound(n, K, DELTA, BETA, TAU, coverage, world.l_train(), clip_error)
            results += [
                violation_row(
                    "R2",
                    "claim",
                    f"Lemma 2 rollout error > bound, {label}",
                    np.abs(est["j_nk"] - est["j_ninf"]),
                    rollout_bound(n, K, DELTA, BETA, TAU),
                    cell,
                ),
                violation_row(
                    "R3",
                    "claim",
                    f"Lemma 3 prompt error > bound, {label}",
                    np.abs(est["j_ninf"] - j_tau),
                    prompt_bound(n, DELTA, BETA, TAU),
                    cell,
                ),
                violation_row(
                    "R4",
                    "claim",
                    f"Lemma 4 sampling error > bound, {label}",
                    np.abs(est["j_nk"] - j_tau),
                    sampling_bound(n, K, DELTA, BETA, TAU),
                    cell,
                ),
                violation_row(
                    "R8",
                    "claim",
                    f"Theorem 1 |J_hat - J*| > bound, {label}",
                    total,
                    theorem1["total"],
                    {**cell, **{f"term_{k}": v for k, v in theorem1.items()}},
                ),
                violation_row(
                    "R13",
                    "claim",
                    f"Lemma 12 clipped-KL error > bound, {label}",
                    np.abs(est["kappa_nk"] - kappa),
                    kl_estimate_bound(n, K, DELTA, TAU),
                    cell,
                ),
            ]
        results.append(_copies_control(world, replications, rng, distance))
        results += _dropped_factor_control(world, replications, rng, distance)
    results.append(
        claim(
            "R1",
            "Lemma 1: max(|J_hat - J*| - sum of three terms)",
            at_most=EXACT,
            statistic=decomposition_gap,
            stat_name="max gap",
            estimate=decomposition_gap,
            theory=0.0,
        )
    )
    bounded = [r for r in results if r.kind == "claim" and "tightness" in r.details]
    tight = [r.details["tightness"] for r in bounded]
    above_one = sum(r.details["bound"] > 1 for r in bounded)
    vacuous = sum(r.details["bound"] >= 1 + 2 * r.details["beta"] * TAU for r in bounded)
    results.append(
        report(
            "R4",
            f"bound / (1-delta)-quantile of the error: {min(tight):.2f}-{max(tight):.2f}; "
            f"bound > 1 (the reward's range) in {above_one}/{len(bounded)}, "
            f">= 1 + 2 beta tau (vacuous) in {vacuous}",
            details={"min": min(tight), "max": max(tight), "above_one": above_one, "vacuous": vacuous},
            estimate=min(tight),
        )
    )
    return results


def _actual_error_curve(world: RLHFWorld, n: int, replications: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per replication: the sample's |l| (R, n K), and |J_hat^{phi,tau}_{n,K} - J*| on TAU_GRID (R, G)."""
    prompts, responses = world.sample(n, TAU_K, replications, rng)
    idx = (prompts[..., None], responses)
    ell = world.log_ratio[idx].reshape(replications, -1)
    reward_mean = world.r_hat[idx].reshape(replications, -1).mean(axis=1)
    j_star = world.objective(world.r_star, BETA, None)
    errors = np.stack(
        [np.abs(reward_mean - BETA * np.clip(ell, -t, t).mean(axis=1) - j_star) for t in TAU_GRID], axis=1
    )
    return np.abs(ell), errors


def run_tau(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """R12: Corollary 3's tau* against the grid minimiser of B_theta(tau) on the same sample
    (a claim: exact), and against the tau that minimises the actual mean error E|J_hat - J*|
    in the world (a report)."""
    replications = 1_000 if config.full else 200
    worst_gap, rows, cells = 0.0, [], []
    for distance in DISTANCES:
        world = make_world(rng, distance=distance)
        for n in TAU_CELLS:
            abs_ell, errors = _actual_error_curve(world, n, replications, rng)
            tau_star = np.array([optimal_tau(u, n, TAU_K, DELTA) for u in abs_ell])
            for u, t in zip(
                abs_ell[:20], tau_star[:20]
            ):  # B on the grid is costly; 20 samples suffice for an exact check
                grid = min(tau_objective(g, u, n, TAU_K, DELTA, BETA) for g in np.concatenate([TAU_GRID, np.unique(u)]))
                worst_gap = max(worst_gap, tau_objective(t, u, n, TAU_K, DELTA, BETA) - grid)
            mean_error = errors.mean(axis=0)
            best = int(np.argmin(mean_error))
            at_star = np.array(
                [np.interp(t, TAU_GRID, e) for t, e in zip(tau_star, errors)]
            )  # error at each sample's own tau*
            cells.append(
                {
                    "distance": distance,
                    "n": n,
                    "K": TAU_K,
                    "alpha": alpha(n, TAU_K, DELTA),
                    "tau_star_mean": float(tau_star.mean()),
                    "tau_actual_best": float(TAU_GRID[best]),
                    "error_at_tau_star": float(at_star.mean()),
                    "error_at_best": float(mean_error[best]),
                    "error_unclipped": float(mean_error[-1]),
                    "tau_grid": TAU_GRID.tolist(),
                    "mean_error": mean_error.tolist(),
                }
            )
    rows.append(
        claim(
            "R12",
            "Corollary 3: B(tau*) - min over a grid of B(tau), same sample",
            at_most=EXACT,
            statistic=worst_gap,
            stat_name="max gap",
            estimate=worst_gap,
            theory=0.0,
        )
    )
    summary = "; ".join(
        f"d={c['distance']}, n={c['n']}: tau* {c['tau_star_mean']:.2f} (error {c['error_at_tau_star']:.3f}) "
        f"vs best {c['tau_actual_best']:.1f} ({c['error_at_best']:.3f})"
        for c in cells
    )
    ratio = max(c["error_at_tau_star"] / c["error_at_best"] for c in cells)
    what = f"actual E|J_hat - J*| at tau* vs at the error-optimal tau: {summary}"
    rows.append(report("R12", what, details={"cells": cells}, estimate=ratio))
    return rows


def _two_stage_variances(world: RLHFWorld) -> tuple[float, float]:
    """sigma_prompt^2 = Var(E[Z | X]) and sigma_rollout^2 = E[Var(Z | X)] of Z = r_hat - beta l^tau (§6.2.2)."""
    z = world.per_rollout(world.r_hat, BETA, TAU)
    conditional = world.conditional_mean(z)
    within = np.sum(world.pi_theta * (z - conditional[:, None]) ** 2, axis=1)
    mean = world.rho @ conditional
    return float(world.rho @ (conditional - mean) ** 2), float(world.rho @ within)


def equal_cost_mse(sigma_prompt2: float, sigma_rollout2: float, c_prefill: float, K: np.ndarray) -> np.ndarray:
    """Exact E(J_hat_{n,K} - J^tau)^2 = (sigma_p^2 + sigma_r^2 / K) / n with n = floor(B / (c_p + K c_d))
    prompts drawn i.i.d. (inf where the budget pays for no prompt)."""
    n = np.floor(BUDGET / (c_prefill + K))
    with np.errstate(divide="ignore"):
        return np.where(n >= 1, (sigma_prompt2 + sigma_rollout2 / K) / n, np.inf)


def run_budget(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """R14-R16: the best K at equal cost B >= n c_p + n K c_d against the K* rules.

    The actual error of each K is the exact MSE of the estimator in the world (checked
    against simulation first: a claim with its z, and a control with the wrong formula
    sigma_p^2 + sigma_r^2 without the 1/K)."""
    replications = 20_000 if config.full else 4_000
    rows, cells, z_right, z_wrong, best_is_one = [], [], [], [], []
    for distance in DISTANCES:
        world = make_world(rng, distance=distance)
        s_p, s_r = _two_stage_variances(world)
        j_tau = world.objective(world.r_hat, BETA, TAU)
        for K in (1, 8, 64):  # simulation against the formula at c_p = 8
            n = int(BUDGET // (8.0 + K))
            est = _estimates(world, world.r_hat, n, K, replications, rng)
            squared = (est["j_nk"] - j_tau) ** 2
            mean, se = squared.mean(), squared.std(ddof=1) / np.sqrt(replications)
            z_right.append((mean - equal_cost_mse(s_p, s_r, 8.0, np.array([K]))[0]) / se)
            if K > 1:  # at K = 1 the two formulas agree
                z_wrong.append((mean - (s_p + s_r) / n) / se)
        for ratio in COST_RATIOS:
            mse = equal_cost_mse(s_p, s_r, ratio, K_GRID)
            best = int(K_GRID[np.argmin(mse)])
            rules = {
                "uniform K*=1": 1,
                "Corollary 4": optimal_rollouts(ratio, 1.0)["k"],
                "Corollary 5": optimal_rollouts(ratio, 1.0, s_r, s_p)["k"],
            }
            if ratio == 0.0:
                best_is_one.append(best == 1)
            cells.append(
                {
                    "distance": distance,
                    "c_prefill/c_decode": ratio,
                    "sigma_prompt2": s_p,
                    "sigma_rollout2": s_r,
                    "best_k": best,
                    **{f"{name} K": k for name, k in rules.items()},
                    **{f"{name} mse/best": float(mse[k - 1] / mse[best - 1]) for name, k in rules.items()},
                    "k_grid": K_GRID.tolist(),
                    "mse": mse.tolist(),
                }
            )
    worst = float(np.max(np.abs(z_right)))
    rows.append(
        claim(
            "R14",
            "simulated MSE at equal cost = (sigma_p^2 + sigma_r^2/K)/n (K = 1, 8, 64)",
            max_abs_z=worst,
            estimate=worst,
            theory=0.0,
        )
    )
    wrong = float(np.min(np.abs(z_wrong)))
    rows.append(control("R14", "the same without the 1/K (K = 8, 64)", min_abs_z=wrong, estimate=wrong, theory=0.0))
    rows.append(
        claim(
            "R14",
            "§6.2.1: with c_prefill = 0 the exact best K is 1",
            at_least=1.0,
            statistic=float(np.mean(best_is_one)),
            stat_name="share with best K = 1",
            estimate=float(np.mean(best_is_one)),
            theory=1.0,
            details={"cells": cells},
        )
    )
    for claim_id, rule in (("R15", "Corollary 4"), ("R16", "Corollary 5")):
        summary = "; ".join(
            f"d={c['distance']}, c_p/c_d={c['c_prefill/c_decode']:g}: "
            f"K {c[rule + ' K']} vs best {c['best_k']} ({c[rule + ' mse/best']:.2f}x)"
            for c in cells
        )
        worst_ratio = max(c[f"{rule} mse/best"] for c in cells)
        what = f"{rule} K against the exact best K at equal cost: {summary}"
        rows.append(report(claim_id, what, estimate=worst_ratio))
    return rows


def run_exact(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    worlds = 50 if config.full else 20
    shift_slack, factor_slack, clip_slack = [], [], []
    for _ in range(worlds):
        world = make_world(rng, distance=float(rng.uniform(0.2, 3.0)))
        shift = abs(world.objective(world.r_hat, BETA, None) - world.objective(world.r_star, BETA, None))
        chi2 = float(chi2_divergence(world.d_theta.ravel(), world.d_train.ravel()))
        shift_slack.append(reward_shift_bound(chi2, world.l_train()) - shift)
        factor_slack.append(
            prompt_coverage(world.rho, world.rho_label)
            * policy_coverage(world.pi_theta, np.exp(world.log_pi_ref), world.rho_label)
            - world.coverage()
        )
        clip_gap = abs(world.objective(world.r_hat, BETA, TAU) - world.objective(world.r_hat, BETA, None))
        clip_slack.append(kl_clipping_bound(BETA, world.log_ratio.ravel(), TAU, world.d_theta.ravel()) - clip_gap)
    rows = []
    for claim_id, what, slack in (
        ("R5", "Lemma 5: min of C(theta) sqrt(L_train) - |J^phi - J*|", shift_slack),
        ("R6", "Lemma 6: min of C_prompt C_pol - C(theta)", factor_slack),
        ("R7", "Lemma 7: min of beta E|l - l^tau| - |J^tau - J|", clip_slack),
    ):
        low = float(np.min(slack))
        rows.append(
            claim(
                claim_id,
                what + f" over {worlds} worlds",
                at_least=-EXACT,
                statistic=low,
                stat_name="min slack",
                estimate=low,
                theory=0.0,
                details={"slack": slack},
            )
        )
    return rows


CHECKS = [
    Check(
        "bounds_sampling",
        ("R1", "R2", "R3", "R4", "R8", "R13"),
        run_sampling,
        "violation rates of Lemmas 2-4, 12 and Theorem 1",
    ),
    Check(
        "bounds_tau",
        ("R12",),
        run_tau,
        "the tau* rule against B_theta's grid minimiser and the actual-error-optimal tau",
    ),
    Check(
        "bounds_budget",
        ("R14", "R15", "R16"),
        run_budget,
        "the best K at equal prefill/decode cost against the K* rules",
    ),
    Check("bounds_pac_bayes", ("R9", "R10"), run_pac_bayes, "Theorem 2 for a checkpoint selected on the same sample"),
    Check("bounds_ou", ("R11",), run_ou, "SGD's stationary covariance, Lemma 16's sandwich and the OU KL bound"),
    Check(
        "bounds_exact",
        ("R5", "R6", "R7"),
        run_exact,
        "reward-shift, coverage factorisation and clipping inequalities, exactly",
    ),
]


if __name__ == "__main__":
    from simulators.cli import main

    raise SystemExit(main(topics=("bounds",), prog="python -m simulators.bounds"))
