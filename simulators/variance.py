"""Monte-Carlo check of VIP's gradient-variance propositions (claims V1-V4).

``python -m simulators.variance [--full] [--seed S]`` runs the four checks below;
``python -m simulators`` runs them with every other registered topic.

- V1/V2 (Props 4.2, 4.3): binary rewards +-1 and several distributions of the
  projected norm Z, on a grid of group sizes n and success probabilities p.
  Negative control: RLOO with the 1/n leave-one-out factor printed in VIP §4.
- V3 (Props E.1, E.2): continuous rewards. Negative control: Var(R) replaced by
  E[R^2] (an uncentred reward).
- V4 (Assumption 4.1): R and Z correlated through a Gaussian copula. The MC is
  compared with our exact i.i.d.-pairs formula (theory.variance.*_iid) — which
  must hold — and with Props 4.2/4.3, which must be rejected; the deviation is
  reported as a map over (n, p, correlation). Then the same with a real gradient:
  Z = ||H(o)||_2 of a softmax token policy and a verifier reward.

Every MC estimate is compared with its theory by z = (estimate - theory) / SE,
with the SE from the same samples (simulators.mc); a claim passes at |z| < 4.
No Python loop runs over Monte-Carlo draws.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats
from tqdm import tqdm

from simulators import mc
from simulators.ledger import Z_THRESHOLD, ClaimResult, decided, report
from simulators.registry import Check, RunConfig
from simulators.token_policy import MarkovTokenPolicy, verifier_reward
from theory.variance import (
    ESTIMATORS,
    gradient_mean_iid,
    gradient_variance,
    gradient_variance_iid,
    projected_gradient,
)

NORM_DISTRIBUTIONS = {
    "gamma(2, 0.5)": stats.gamma(a=2.0, scale=0.5),
    "lognormal(0, 0.5)": stats.lognorm(s=0.5),
    "half-normal(1)": stats.halfnorm(),
}
REWARD_DISTRIBUTIONS = {
    "beta(2, 5)": stats.beta(2.0, 5.0),
    "normal(0.3, 1)": stats.norm(0.3, 1.0),
    "exponential(1)": stats.expon(),
}
COPULA_LOG_SD = 0.5  # V4: Z = exp(0.5 X2), a log-normal norm
MAX_CHUNK = 2_000_000  # draws per array; bounds memory in --full


@dataclasses.dataclass(frozen=True)
class Grid:
    """Group sizes, probabilities and draws (groups per cell) of one mode."""

    n: tuple[int, ...]
    p: tuple[float, ...]
    groups: int
    rho: tuple[float, ...] = ()


QUICK = {
    "binary": Grid(n=(3, 4, 8, 16, 64), p=(0.0, 0.01, 0.1, 0.5, 0.8, 0.99, 1.0), groups=40_000),
    "continuous": Grid(n=(3, 8, 32), p=(), groups=40_000),
    "copula": Grid(n=(4, 16), p=(0.1, 0.5, 0.9), groups=40_000, rho=(-0.6, -0.3, 0.0, 0.3, 0.6)),
    "token": Grid(n=(4, 16), p=(), groups=20_000),
}
FULL = {
    "binary": Grid(
        n=(3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64),
        p=(0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 0.999, 1.0),
        groups=400_000,
    ),
    "continuous": Grid(n=(3, 4, 8, 16, 32, 64), p=(), groups=400_000),
    "copula": Grid(
        n=(3, 4, 8, 16, 32),
        p=(0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95),
        groups=200_000,
        rho=(-0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8),
    ),
    "token": Grid(n=(4, 8, 16, 32), p=(), groups=200_000),
}


def grid(config: RunConfig, name: str) -> Grid:
    return (FULL if config.full else QUICK)[name]


# --- shared helpers -------------------------------------------------------


def rloo_as_printed(rewards: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """G with the RLOO baseline as VIP §4 prints it: (1/n) sum_{k != j} R_k.

    Deliberately wrong (RLOO's definition divides by n - 1); the V2 negative control.
    """
    n = rewards.shape[-1]
    advantages = rewards - (rewards.sum(axis=-1, keepdims=True) - rewards) / n
    return np.mean(advantages * norms, axis=-1)


def compare(samples: np.ndarray, var_theory: float, mean_theory: float) -> dict:
    """Sample variance and mean of G against their theory, with z-scores."""
    var, var_se = mc.variance_se(samples)
    mean, mean_se = mc.mean_se(samples)
    return {
        "var": float(var),
        "var_se": float(var_se),
        "var_theory": float(var_theory),
        "z_var": float(mc.z_score(var, var_se, var_theory)),
        "mean": float(mean),
        "mean_se": float(mean_se),
        "mean_theory": float(mean_theory),
        "z_mean": float(mc.z_score(mean, mean_se, mean_theory)),
    }


def summary_row(claim: str, kind: str, what: str, cells: list[dict], stat: str, **extra) -> ClaimResult:
    """One table row for many cells: the worst cell (largest |z|) is shown.

    The ledger's rule on max|z|: a claim holds when every cell has |z| < 4; a control is
    rejected when some cell has |z| >= 4.
    """
    moment = "var" if stat == "z_var" else "mean"
    zs = np.abs([c[stat] for c in cells])
    worst = cells[int(np.argmax(zs))]
    rejected = int(np.sum(zs >= Z_THRESHOLD))
    details = {"cells": cells, "stat": stat, "cells_rejected": rejected, "worst_cell": worst, **extra}
    return decided(
        kind,
        claim,
        f"{what} [{len(cells)} cells, {rejected} with |z|>=4]",
        max_abs_z=float(zs.max()),
        estimate=worst[moment],
        se=worst[f"{moment}_se"],
        theory=worst[f"{moment}_theory"],
        details=details,
    )


def chunked_groups(groups: int, n: int) -> list[int]:
    """Split ``groups`` rows of n draws into chunks of at most MAX_CHUNK draws."""
    per_chunk = max(1, MAX_CHUNK // n)
    sizes = [per_chunk] * (groups // per_chunk)
    if groups % per_chunk:
        sizes.append(groups % per_chunk)
    return sizes


def progress(config: RunConfig, total: int, desc: str):
    return tqdm(total=total, desc=desc, disable=None if config.progress else True, leave=False)


# --- V1, V2: binary rewards ------------------------------------------------


def run_binary(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """Props 4.2 and 4.3 on a grid of (Z distribution, n, p); control: RLOO as printed."""
    g = grid(config, "binary")
    cells = {"dr_grpo": [], "rloo": [], "rloo_as_printed": []}
    bar = progress(config, len(NORM_DISTRIBUTIONS) * len(g.n), "V1/V2 binary")
    for z_name, z_dist in NORM_DISTRIBUTIONS.items():
        for n in g.n:
            samples = {(est, p): [] for est in cells for p in g.p}
            for size in chunked_groups(g.groups, n):
                uniforms = rng.random((size, n))  # one draw serves every p (common random numbers)
                norms = z_dist.rvs(size=(size, n), random_state=rng)
                for p in g.p:
                    rewards = np.where(uniforms < p, 1.0, -1.0)
                    for est in ESTIMATORS:
                        samples[(est, p)].append(projected_gradient(rewards, norms, est))
                    samples[("rloo_as_printed", p)].append(rloo_as_printed(rewards, norms))
            for (est, p), parts in samples.items():
                theory_est = "rloo" if est == "rloo_as_printed" else est
                var_theory = gradient_variance(theory_est, n, p=p, sigma_z2=z_dist.var())
                cell = compare(np.concatenate(parts), var_theory, 0.0)
                cells[est].append({"estimator": est, "z_dist": z_name, "n": n, "p": p, **cell})
            bar.update()
    bar.close()
    return [
        summary_row("V1", "claim", "Var(G) Dr.GRPO = (n-1)/n^2 4σ²p(1-p) (Prop 4.2)", cells["dr_grpo"], "z_var"),
        summary_row("V1", "claim", "E[G] Dr.GRPO = 0 (Prop 4.2)", cells["dr_grpo"], "z_mean"),
        summary_row("V2", "claim", "Var(G) RLOO = 4σ²p(1-p)/(n-1) (Prop 4.3)", cells["rloo"], "z_var"),
        summary_row("V2", "claim", "E[G] RLOO = 0 (Prop 4.3)", cells["rloo"], "z_mean"),
        summary_row(
            "V2", "control", "RLOO with 1/n baseline (VIP §4 as printed) vs Prop 4.3", cells["rloo_as_printed"], "z_var"
        ),
    ]


# --- V3: continuous rewards ---------------------------------------------------


def run_continuous(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """Props E.1 and E.2; control: Var(R) replaced by the uncentred E[R^2]."""
    g = grid(config, "continuous")
    z_dists = {k: NORM_DISTRIBUTIONS[k] for k in ("gamma(2, 0.5)", "lognormal(0, 0.5)")}
    cells = {"dr_grpo": [], "rloo": [], "uncentred": []}
    bar = progress(config, len(REWARD_DISTRIBUTIONS) * len(z_dists) * len(g.n), "V3 continuous")
    for r_name, r_dist in REWARD_DISTRIBUTIONS.items():
        for z_name, z_dist in z_dists.items():
            for n in g.n:
                parts = {est: [] for est in ESTIMATORS}
                for size in chunked_groups(g.groups, n):
                    rewards = r_dist.rvs(size=(size, n), random_state=rng)
                    norms = z_dist.rvs(size=(size, n), random_state=rng)
                    for est in ESTIMATORS:
                        parts[est].append(projected_gradient(rewards, norms, est))
                label = {"r_dist": r_name, "z_dist": z_name, "n": n}
                for est in ESTIMATORS:
                    samples = np.concatenate(parts[est])
                    var_theory = gradient_variance(est, n, reward_var=r_dist.var(), sigma_z2=z_dist.var())
                    cells[est].append({"estimator": est, **label, **compare(samples, var_theory, 0.0)})
                wrong = gradient_variance("dr_grpo", n, reward_var=r_dist.moment(2), sigma_z2=z_dist.var())
                samples = np.concatenate(parts["dr_grpo"])
                cells["uncentred"].append({"estimator": "dr_grpo", **label, **compare(samples, wrong, 0.0)})
                bar.update()
    bar.close()
    return [
        summary_row("V3", "claim", "Var(G) Dr.GRPO = (n-1)σ²Var(R)/n² (Prop E.1)", cells["dr_grpo"], "z_var"),
        summary_row("V3", "claim", "Var(G) RLOO = σ²Var(R)/(n-1) (Prop E.2)", cells["rloo"], "z_var"),
        summary_row("V3", "claim", "E[G] = 0, continuous rewards", cells["dr_grpo"] + cells["rloo"], "z_mean"),
        summary_row("V3", "control", "Prop E.1 with E[R²] in place of Var(R)", cells["uncentred"], "z_var"),
    ]


# --- V4: correlated R and Z ------------------------------------------------------


def copula_moments(p: float, rho: float, log_sd: float = COPULA_LOG_SD) -> dict:
    """Exact E[R^a Z^b] for R = +1 iff X1 > Phi^-1(1 - p), Z = exp(log_sd X2), corr(X1, X2) = rho.

    E[Z^b 1{X1 > c}] = exp(b² s²/2) Phi(rho b s - c) (exponential tilting of X2).
    """
    c = stats.norm.ppf(1.0 - p)
    moments = {}
    for b in range(3):
        z_moment = np.exp(0.5 * (b * log_sd) ** 2)
        moments[(0, b)] = z_moment
        moments[(2, b)] = z_moment  # R^2 = 1
        moments[(1, b)] = z_moment * (2.0 * stats.norm.cdf(rho * b * log_sd - c) - 1.0)
    return moments


def run_copula(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """Assumption 4.1(ii) violated on purpose: the V4 violation map."""
    g = grid(config, "copula")
    exact_cells, prop_cells, violated_cells, map_cells = [], [], [], []
    bar = progress(config, len(g.rho) * len(g.n), "V4 correlated")
    for rho in g.rho:
        for n in g.n:
            parts = {(est, p): [] for est in ESTIMATORS for p in g.p}
            for size in chunked_groups(g.groups, n):
                x1 = rng.standard_normal((size, n))
                x2 = rho * x1 + np.sqrt(1.0 - rho**2) * rng.standard_normal((size, n))
                norms = np.exp(COPULA_LOG_SD * x2)
                for p in g.p:
                    rewards = np.where(x1 > stats.norm.ppf(1.0 - p), 1.0, -1.0)
                    for est in ESTIMATORS:
                        parts[(est, p)].append(projected_gradient(rewards, norms, est))
            for (est, p), chunks in parts.items():
                samples = np.concatenate(chunks)
                moments = copula_moments(p, rho)
                var_z = moments[(0, 2)] - moments[(0, 1)] ** 2
                cov_rz = moments[(1, 1)] - moments[(1, 0)] * moments[(0, 1)]
                corr = cov_rz / np.sqrt(4 * p * (1 - p) * var_z)
                label = {"estimator": est, "n": n, "p": p, "rho_latent": rho, "corr_rz": float(corr)}
                var_exact = gradient_variance_iid(est, n, moments)
                mean_exact = gradient_mean_iid(est, n, moments)
                var_prop = gradient_variance(est, n, p=p, sigma_z2=var_z)
                exact_cells.append({**label, **compare(samples, var_exact, mean_exact)})
                prop_cell = {**label, **compare(samples, var_prop, 0.0)}
                prop_cells.append(prop_cell)
                if abs(rho) >= 0.3:
                    violated_cells.append(prop_cell)
                map_cells.append(
                    {
                        **label,
                        "rel_dev_var": float(var_exact / var_prop - 1.0),
                        "mean_over_sd": float(mean_exact / np.sqrt(var_exact)),
                    }
                )
            bar.update()
    bar.close()
    rel = np.array([c["rel_dev_var"] for c in map_cells])
    bias = np.array([c["mean_over_sd"] for c in map_cells])
    corr = np.array([c["corr_rz"] for c in map_cells])
    deviation = report(
        "V4",
        (
            f"Prop 4.2/4.3 under corr(R,Z) in [{corr.min():.2f}, {corr.max():.2f}]: "
            f"Var/Prop-1 in [{rel.min():+.2f}, {rel.max():+.2f}], E[G]/sd(G) in [{bias.min():+.2f}, {bias.max():+.2f}]"
        ),
        details={"map": map_cells, "log_sd": COPULA_LOG_SD},
        estimate=float(rel[np.argmax(np.abs(rel))]),
        theory=0.0,
    )
    return [
        summary_row("V4", "claim", "Var(G), correlated R,Z = exact i.i.d.-pairs formula (ours)", exact_cells, "z_var"),
        summary_row("V4", "claim", "E[G] = (n-1)/n Cov(R,Z) Dr.GRPO, Cov(R,Z) RLOO (ours)", exact_cells, "z_mean"),
        summary_row("V4", "control", "Props 4.2/4.3 variance at |ρ_latent| >= 0.3", violated_cells, "z_var"),
        summary_row("V4", "control", "E[G] = 0 at |ρ_latent| >= 0.3", violated_cells, "z_mean"),
        deviation,
    ]


# --- V4 with a real gradient -------------------------------------------------------


def sequence_moments(rewards: np.ndarray, norms: np.ndarray, weights: np.ndarray) -> dict:
    """Exact E[R^a Z^b] over an enumerated sequence distribution."""
    return {(a, b): float(np.sum(weights * rewards**a * norms**b)) for a in range(3) for b in range(3)}


def run_token_policy(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """Props 4.2/4.3 with Z = ||H(o)||_2 of a softmax token policy and verifier rewards.

    The policy is small enough to enumerate (4 tokens, horizon 8: 9,841 sequences),
    so p, sigma_Z^2, Cov(R, Z) and the exact Var(G) are known; the MC checks the
    exact value, and the rows report how far the Props (which assume Cov = 0) are off.
    """
    g = grid(config, "token")
    policy = MarkovTokenPolicy.random(rng, vocab=4, horizon=8)
    sequences, weights = policy.enumerate()
    exact_cells, report_rows = [], []
    bar = progress(config, 2 * len(g.n), "V4 token policy")
    for rule in ("sum_mod3", "short"):
        rewards_all = verifier_reward(policy, sequences, rule)
        norms_all = policy.grad_norm(sequences)
        moments = sequence_moments(rewards_all, norms_all, weights)
        p = (moments[(1, 0)] + 1.0) / 2.0
        var_z = moments[(0, 2)] - moments[(0, 1)] ** 2
        cov = moments[(1, 1)] - moments[(1, 0)] * moments[(0, 1)]
        corr = cov / np.sqrt(4 * p * (1 - p) * var_z)
        rule_cells = []
        for n in g.n:
            tokens = policy.sample(rng, g.groups * n).reshape(g.groups, n, policy.horizon)
            rewards = verifier_reward(policy, tokens, rule)
            norms = policy.grad_norm(tokens)
            for est in ESTIMATORS:
                samples = projected_gradient(rewards, norms, est)
                label = {"rule": rule, "estimator": est, "n": n, "p": float(p), "corr_rz": float(corr)}
                exact = compare(samples, gradient_variance_iid(est, n, moments), gradient_mean_iid(est, n, moments))
                exact_cells.append({**label, **exact})
                prop = compare(samples, gradient_variance(est, n, p=p, sigma_z2=var_z), 0.0)
                rule_cells.append({**label, **prop, "rel_dev_var": prop["var"] / prop["var_theory"] - 1.0})
            bar.update()
        worst = max(rule_cells, key=lambda c: abs(c["z_var"]))
        report_rows.append(
            report(
                "V4",
                (
                    f"real gradient, verifier '{rule}': p={p:.3f}, corr(R,Z)={corr:+.3f}; "
                    f"MC Var/Prop-1 in [{min(c['rel_dev_var'] for c in rule_cells):+.2f}, "
                    f"{max(c['rel_dev_var'] for c in rule_cells):+.2f}]"
                ),
                details={"cells": rule_cells, "p": float(p), "var_z": float(var_z), "corr_rz": float(corr)},
                estimate=worst["var"],
                theory=worst["var_theory"],
                se=worst["var_se"],
                statistic=worst["z_var"],
                stat_name="z",
            )
        )
    bar.close()
    return [
        summary_row("V4", "claim", "real gradient: MC Var(G) = exact enumeration (ours)", exact_cells, "z_var"),
        *report_rows,
    ]


CHECKS = [
    Check("binary_rewards", ("V1", "V2"), run_binary, "Props 4.2/4.3, binary rewards, MC vs closed form"),
    Check("continuous_rewards", ("V3",), run_continuous, "Props E.1/E.2, continuous rewards"),
    Check("correlated_rewards", ("V4",), run_copula, "Assumption 4.1 violated: Gaussian-copula map"),
    Check("token_policy", ("V4",), run_token_policy, "real gradient norms of a softmax token policy"),
]


if __name__ == "__main__":
    from simulators.cli import main

    raise SystemExit(main(topics=("variance",), prog="python -m simulators.variance"))
