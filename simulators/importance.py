"""Checks of CTPO's importance-ratio claims C1-C9 on token MDPs.

``python -m simulators.importance [--full]``.

Exact enumeration on :class:`~simulators.token_mdp.TabularTokenMDP` (V = 3, H = 6 quick,
H = 8 full: every sequence at once) and Monte Carlo on :class:`~simulators.token_mdp.MarkovPolicyPair`
for long horizons (H = 2,000 quick, 8,000 full). Reward: R = 1 when the tokens sum to 0
mod 3, else 0. Gradients are taken with respect to the target policy's logits.

- C1 (Prop 1): E_b[sum_t rho_t^cum Q_t grad log pi(a_t | s_t)] = grad J exactly, with
  Q_t = E_theta[R | a_1:t] a function of the prefix; Monte Carlo z-tests on random
  projections. Report: the outcome advantage A = R of the CTPO objective (Prop 1 does
  not cover it; the suffix is drawn from pi_b).
- C2: the token ratio's term is unbiased at t = 1 and biased at every t > 1 (control in
  the MC: the token-ratio estimator is rejected).
- C3: E_b[eps_t | a_1:t] = 1 for every prefix (control: the same mean under pi_theta).
- C4 (Prop 2(i)): Var(rho^seq) > Var(rho_t^cum) for every t < H (control: policies equal
  after the first position, where the premise fails and the two variances coincide).
- C5 (Prop 2(ii)): Var(rho_t^cum) = prod (1 + chi2_t') - 1 with independent positions,
  exactly and by MC at long H; the ratio -> H/t as delta -> 0 (equal chi2 per position).
  Controls: prefix-dependent policies (the formula is no longer exact) and the wrong
  formula sum chi2.
- C6 (§3.3): Var(log rho_t^cum) = t sigma^2 for i.i.d. positions; control: a Markov pair
  whose log ratios are correlated across positions.
- C7 (Fig. 1): std of log rho_t^cum against sigma_hat sqrt(t); clip rates per position,
  fixed [0.5, 5] against sqrt(t)-adaptive (eps_low = 0.025, eps_high = 0.05).
- C8 (§3.3 objectives): theory.importance's gradients chained to the logits against finite
  differences; the direction of each objective's expected gradient against grad J.
- C9 (CTPO's released loss, theory.importance.ctpo_released_objective), on C8's MDP: exact bias,
  variance and cosine of its gradient against grad J beside the paper's surrogate, on- and
  off-policy; unbiased on-policy, exactly and by Monte Carlo (control: the paper's surrogate);
  off-policy, it departs from Prop 1's form exactly where its dual clip binds (control: the
  paper's surrogate).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import stats
from scipy.special import softmax

from simulators.ledger import ClaimResult, claim, control, decided, report
from simulators.mc import mean_se, variance_se, z_score
from simulators.registry import Check, RunConfig
from simulators.token_mdp import MarkovPolicyPair, TabularTokenMDP, prefix_mean
from theory.importance import (
    adaptive_clip_bounds,
    chi2_divergence,
    ctpo_objective,
    cumulative_log_ratio_variance,
    cumulative_ratio_variance,
    dual_clip_threshold,
    grpo_objective,
    gspo_objective,
    objective_gradient,
)

EXACT = 1e-9  # relative tolerance of an exact identity in floating point
FIXED_CLIP = (0.5, 5.0)  # CTPO Fig. 1: fixed range of the ratio
VARIANTS = (
    ("GRPO", "grpo", False),
    ("GSPO", "gspo", False),
    ("CTPO", "ctpo", False),
    ("CTPO, detached prefix", "ctpo", True),
)
OBJECTIVES = {"grpo": grpo_objective, "gspo": gspo_objective, "ctpo": ctpo_objective}
NO_CLIP = {
    "eps_low": 1e3,
    "eps_high": 1e3,
}  # bounds [1 - 1e3, 1 + 1e3] (GRPO/GSPO), e^(-+1e3 sqrt t) (CTPO): nothing binds


def sum_mod3_reward(seqs: np.ndarray) -> np.ndarray:
    return (seqs.sum(axis=1) % 3 == 0).astype(float)


class Enumerated:
    """Every sequence of a tabular MDP with its probabilities, token log-probs and reward."""

    def __init__(self, mdp: TabularTokenMDP):
        self.mdp = mdp
        self.seqs, self.states = mdp.sequences()
        self.lp_b = mdp.token_logp(mdp.logits_b, self.seqs, self.states)
        self.lp_t = mdp.token_logp(mdp.logits_theta, self.seqs, self.states)
        self.p_b, self.p_t = np.exp(self.lp_b.sum(axis=1)), np.exp(self.lp_t.sum(axis=1))
        self.reward = sum_mod3_reward(self.seqs)
        self.log_r = self.lp_t - self.lp_b
        self.cum = np.exp(np.cumsum(self.log_r, axis=1))
        self.seq_ratio = self.cum[:, -1]

    def score_sum(self, weights: np.ndarray) -> np.ndarray:
        return self.mdp.score_sum(weights, self.seqs, self.states, self.mdp.logits_theta)

    def true_gradient(self) -> np.ndarray:
        """grad J(theta) = E_theta[R sum_t grad log pi_theta(a_t | s_t)] (policy gradient theorem)."""
        return self.score_sum(np.repeat((self.p_t * self.reward)[:, None], self.mdp.horizon, axis=1))

    def q_values(self) -> np.ndarray:
        """Q_t = E_theta[R | a_1:t] for every sequence and position (N, H)."""
        return np.stack(
            [prefix_mean(self.reward, self.p_t, self.states, t + 1) for t in range(self.mdp.horizon)], axis=1
        )

    def expected(self, ratio: np.ndarray, advantage: np.ndarray) -> np.ndarray:
        """E_b[sum_t ratio_t A_t grad log pi_theta(a_t | s_t)] by enumeration."""
        return self.score_sum(self.p_b[:, None] * ratio * advantage)

    def variance(self, values: np.ndarray) -> np.ndarray:
        """Var_b of each column of ``values``."""
        mean = self.p_b @ values
        return self.p_b @ (values - mean) ** 2

    def chi2_per_position(self) -> np.ndarray:
        """chi2_t = E_b[chi2(pi_theta(. | s_t) || pi_b(. | s_t))] (Prop 2(ii))."""
        local = chi2_divergence(softmax(self.mdp.logits_theta, axis=-1), softmax(self.mdp.logits_b, axis=-1))
        return self.p_b @ local[self.states]

    def score_norm2(self, weights: np.ndarray) -> np.ndarray:
        """||sum_t weights_t grad log pi_theta(a_t | s_t)||^2 of every sequence. The positions of one
        sequence are prefixes of different lengths, so distinct states, and their scores
        onehot(a_t) - pi(. | s_t) are orthogonal: the square is sum_t weights_t^2 ||score_t||^2."""
        pi = softmax(self.mdp.logits_theta, axis=-1)[self.states]  # (N, H, V)
        chosen = np.take_along_axis(pi, self.seqs[..., None], axis=-1)[..., 0]
        return np.sum(weights**2 * (1.0 - 2.0 * chosen + np.sum(pi**2, axis=-1)), axis=1)


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / max(np.linalg.norm(np.ravel(b)), 1e-300))


def _exact_row(claim_id, kind, what, value, threshold, below: bool, details=None) -> ClaimResult:
    """An exact comparison: the statement holds when the relative error is below ``threshold``
    (``below``), or when the gap is above it (not ``below``); a claim passes when it holds, a
    control is rejected when it does not."""
    bound = {"below": threshold} if below else {"above": threshold}
    return decided(
        kind,
        claim_id,
        what,
        **bound,
        statistic=value,
        stat_name="rel" if below else "gap",
        estimate=value,
        theory=0.0,
        details=details,
    )


# --- C1, C2: unbiasedness ------------------------------------------------------------------


def _projected_samples(e: Enumerated, idx: np.ndarray, weights: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """u_k . (sum_t weights_t grad log pi(a_t | s_t)) for the sampled sequences ``idx`` (weights:
    ratio_t A_t of every enumerated sequence)."""
    pt = softmax(e.mdp.logits_theta, axis=-1)
    # u . score(s, a) = u[s, a] - sum_a' pi(a' | s) u[s, a'], for every direction, state and token
    proj = directions - np.einsum("sa,ksa->ks", pt, directions)[:, :, None]
    states, seqs = e.states[idx], e.seqs[idx]
    return np.einsum("nt,knt->kn", weights[idx], proj[:, states, seqs])


def run_unbiased(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """C1, C2 by enumeration and by Monte Carlo on random projections of the gradient."""
    horizon = 8 if config.full else 6
    e = Enumerated(TabularTokenMDP.random(rng, vocab=3, horizon=horizon, delta=0.6))
    grad = e.true_gradient()
    q = e.q_values()
    token = np.exp(e.log_r)
    outcome = np.repeat(e.reward[:, None], horizon, axis=1)
    cum_q = _rel(e.expected(e.cum, q), grad)
    seq_r = _rel(e.expected(np.repeat(e.seq_ratio[:, None], horizon, axis=1), outcome), grad)
    cum_r = _rel(e.expected(e.cum, outcome), grad)
    tok_q = _rel(e.expected(token, q), grad)
    # C2 per position: the token-ratio term against the true term E_theta[Q_t grad log pi(a_t | s_t)]
    per_t = []
    for t in range(horizon):
        only = np.zeros_like(q)
        only[:, t] = 1.0
        truth = e.score_sum((e.p_t * q[:, t])[:, None] * only)
        per_t.append(_rel(e.expected(token * only, q), truth))
    # Monte Carlo: z of the mean projection against the exact projection of grad J
    n_mc = 200_000 if config.full else 40_000
    idx = rng.choice(len(e.p_b), size=n_mc, p=e.p_b / e.p_b.sum())
    directions = rng.standard_normal((6,) + grad.shape)
    truth = np.einsum("ksa,sa->k", directions, grad)
    z = {}
    for name, ratio in (("cum", e.cum), ("token", token)):
        mean, se = mean_se(_projected_samples(e, idx, ratio * q, directions))
        z[name] = z_score(mean, se, truth)
    # exact variance of each estimator along the same projections (all sequences, weights P_b)
    every = np.arange(len(e.p_b))
    seq_ratio = np.repeat(e.seq_ratio[:, None], horizon, axis=1)
    spread = {}
    for name, ratio in (("token", token), ("cumulative", e.cum), ("sequence", seq_ratio)):
        proj = _projected_samples(e, every, ratio * q, directions)
        spread[name] = float(np.mean(proj**2 @ e.p_b - (proj @ e.p_b) ** 2))
    cells = {
        "rel_errors": {"cum_Q": cum_q, "seq_R": seq_r, "cum_R": cum_r, "token_Q": tok_q},
        "token_bias_per_t": per_t,
        "z": {k: v.tolist() for k, v in z.items()},
        "H": horizon,
        "estimator_variance": spread,
    }
    z_cum, z_tok = float(np.max(np.abs(z["cum"]))), float(np.max(np.abs(z["token"])))
    return [
        _exact_row(
            "C1",
            "claim",
            f"Prop 1: E_b[sum rho_t^cum Q_t grad log pi] = grad J (exact, V = 3, H = {horizon})",
            cum_q,
            EXACT,
            True,
            cells,
        ),
        _exact_row(
            "C1",
            "claim",
            "full sequence ratio with the outcome reward R is unbiased (exact)",
            seq_r,
            EXACT,
            True,
            cells,
        ),
        claim("C1", f"Prop 1 by Monte Carlo: 6 random projections, {n_mc} sequences", max_abs_z=z_cum, details=cells),
        report(
            "C1",
            "CTPO's practice, rho_t^cum with the outcome A = R (suffix from pi_b): "
            f"relative bias {cum_r:.3f} of |grad J|",
            details=cells,
            estimate=cum_r,
            theory=0.0,
        ),
        report(
            "C1",
            "exact variance of sum_t ratio_t Q_t grad log pi (6 projections), relative to the cumulative ratio: "
            f"token {spread['token'] / spread['cumulative']:.2f}, "
            f"sequence {spread['sequence'] / spread['cumulative']:.2f}",
            details=cells,
            estimate=spread["sequence"] / spread["cumulative"],
            theory=1.0,
        ),
        _exact_row(
            "C2", "claim", f"token ratio unbiased at t = 1 (rel {per_t[0]:.1e}) ...", per_t[0], EXACT, True, cells
        ),
        _exact_row(
            "C2",
            "claim",
            f"... and biased at every t > 1 (min rel bias {min(per_t[1:]):.3f}; whole-gradient bias {tok_q:.3f})",
            min(per_t[1:]),
            1e-3,
            False,
            cells,
        ),
        control("C2", "token-ratio estimator in the same Monte-Carlo test", max_abs_z=z_tok, details=cells),
    ]


# --- C3, C4, C5, C6: exact identities --------------------------------------------------------


def run_variance_exact(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """C3-C6 by enumeration."""
    horizon = 8 if config.full else 6
    tab = Enumerated(TabularTokenMDP.random(rng, vocab=3, horizon=horizon, delta=0.5))
    # C3: conditional mean of the suffix ratio, under pi_b (claim) and under pi_theta (control)
    suffix = tab.seq_ratio[:, None] / tab.cum[:, :-1]  # eps_t for t = 1..H-1
    dev_b = max(
        float(np.max(np.abs(prefix_mean(suffix[:, t - 1], tab.p_b, tab.states, t) - 1))) for t in range(1, horizon)
    )
    dev_t = max(
        float(np.max(np.abs(prefix_mean(suffix[:, t - 1], tab.p_t, tab.states, t) - 1))) for t in range(1, horizon)
    )
    # C4: Var(rho^seq) - Var(rho_t^cum) > 0; control: the policies agree after the first token
    var_cum = tab.variance(tab.cum)
    gap = float(np.min(var_cum[-1] - var_cum[:-1]) / var_cum[-1])
    flat = Enumerated(TabularTokenMDP.random(rng, vocab=3, horizon=horizon, delta=0.5, future_equal_after=1))
    flat_var = flat.variance(flat.cum)
    flat_gap = float(np.max(np.abs(flat_var[-1] - flat_var[:-1])) / flat_var[-1])
    # C5: product formula with independent positions; controls: prefix-dependent policies, sum chi2
    ind = Enumerated(TabularTokenMDP.random(rng, vocab=3, horizon=horizon, delta=0.5, kind="independent"))
    chi2 = ind.chi2_per_position()
    c5 = _rel(ind.variance(ind.cum), cumulative_ratio_variance(chi2))
    c5_dependent = _rel(tab.variance(tab.cum), cumulative_ratio_variance(tab.chi2_per_position()))
    c5_sum = _rel(ind.variance(ind.cum), np.cumsum(chi2))
    # H/t limit: equal chi2 per position and delta -> 0
    limits = {}
    for delta in (0.3, 0.1, 1e-3):
        st_ = Enumerated(TabularTokenMDP.random(rng, vocab=3, horizon=horizon, delta=delta, kind="stationary"))
        v = st_.variance(st_.cum)
        limits[str(delta)] = {"chi2_per_position": float(st_.chi2_per_position()[0]), "ratio": (v[-1] / v).tolist()}
    h_over_t = horizon / np.arange(1, horizon + 1)
    limit_err = float(np.max(np.abs(np.array(limits["0.001"]["ratio"]) / h_over_t - 1)))
    # C6: Var(log rho_t^cum) = t sigma^2 for i.i.d. positions
    stat = Enumerated(TabularTokenMDP.random(rng, vocab=3, horizon=horizon, delta=0.5, kind="stationary"))
    log_cum = np.cumsum(stat.log_r, axis=1)
    sigma2 = float(stat.variance(stat.log_r[:, :1])[0])
    c6 = _rel(stat.variance(log_cum), cumulative_log_ratio_variance(np.full(horizon, sigma2)))
    cells = {"H": horizon, "var_cum_tabular": var_cum.tolist(), "chi2": chi2.tolist(), "limits": limits}
    return [
        _exact_row(
            "C3",
            "claim",
            f"E_b[eps_t | a_1:t] = 1 for every prefix, t < H (max dev {dev_b:.1e})",
            dev_b,
            EXACT,
            True,
            cells,
        ),
        _exact_row("C3", "control", "the same conditional mean under pi_theta", dev_t, EXACT, True, cells),
        _exact_row(
            "C4",
            "claim",
            f"Prop 2(i): Var(rho^seq) > Var(rho_t^cum) for all t < H (min relative gap {gap:.3f})",
            gap,
            1e-9,
            False,
            cells,
        ),
        _exact_row(
            "C4", "control", "premise violated (policies equal after t = 1): strict gap", flat_gap, 1e-9, False, cells
        ),
        _exact_row(
            "C5",
            "claim",
            "Prop 2(ii): Var(rho_t^cum) = prod(1 + chi2) - 1, independent positions (exact)",
            c5,
            EXACT,
            True,
            cells,
        ),
        _exact_row(
            "C5",
            "control",
            f"prefix-dependent policies, same formula with averaged chi2 (rel {c5_dependent:.3f})",
            c5_dependent,
            EXACT,
            True,
            cells,
        ),
        _exact_row("C5", "control", f"wrong formula sum_t chi2_t (rel {c5_sum:.3f})", c5_sum, EXACT, True, cells),
        _exact_row(
            "C5",
            "claim",
            f"Var(rho^seq)/Var(rho_t^cum) -> H/t as delta -> 0 (logit delta = 1e-3: max rel dev {limit_err:.1e})",
            limit_err,
            1e-2,
            True,
            cells,
        ),
        _exact_row("C6", "claim", "Var(log rho_t^cum) = t sigma^2, i.i.d. positions (exact)", c6, EXACT, True, cells),
    ]


# --- C5, C6, C7: long horizons by Monte Carlo ---------------------------------------------------


def _checkpoints(horizon: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, horizon, 8)).astype(int))


def run_long_horizon(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """C5/C6 at long horizons (Monte Carlo) and the C7 Fig. 1 analogue."""
    horizon, n = (8000, 20_000) if config.full else (2000, 8000)
    pair = MarkovPolicyPair.random(rng, vocab=8, delta=0.6 / np.sqrt(horizon), stationary=True)
    log_r = pair.sample_log_ratios(rng, n, horizon)
    log_cum = np.cumsum(log_r, axis=1)
    ts = _checkpoints(horizon)
    # C5: Var(rho_t^cum) against (1 + chi2)^t - 1
    var, se = variance_se(np.exp(log_cum[:, ts - 1]), axis=0)
    theory5 = cumulative_ratio_variance(np.full(horizon, pair.chi2_per_step()))[ts - 1]
    z5 = z_score(var, se, theory5)
    # C6: Var(log rho_t^cum) against t sigma^2
    _, sigma2 = pair.stationary_log_ratio_moments()
    lvar, lse = variance_se(log_cum[:, ts - 1], axis=0)
    z6 = z_score(lvar, lse, ts * sigma2)
    # C6 control: log ratios correlated across positions (prefix-dependent Markov pair)
    dep = MarkovPolicyPair.random(rng, vocab=8, delta=0.6 / np.sqrt(horizon))
    dep_log = dep.sample_log_ratios(rng, n, horizon)
    dep_sigma2 = float(np.mean(np.var(dep_log[:, horizon // 2 :], axis=0, ddof=1)))  # stationary per-token variance
    dvar, dse = variance_se(np.cumsum(dep_log, axis=1)[:, ts - 1], axis=0)
    z6_dep = z_score(dvar, dse, ts * dep_sigma2)
    # C7: std of log rho_t^cum, fit sigma_hat sqrt(t); clip rates per position
    t_all = np.arange(1, horizon + 1)
    std = log_cum.std(axis=0, ddof=1)
    sigma_hat = float(np.sum(std * np.sqrt(t_all)) / np.sum(t_all))  # least squares of std = sigma sqrt(t)
    fixed = np.mean((log_cum < np.log(FIXED_CLIP[0])) | (log_cum > np.log(FIXED_CLIP[1])), axis=0)
    low, high = adaptive_clip_bounds(t_all)
    adaptive = np.mean((log_cum < np.log(low)) | (log_cum > np.log(high)), axis=0)
    late, early = slice(horizon // 2, None), slice(9, 20)
    rise = float(np.mean(fixed[late]) - np.mean(fixed[early]))
    rise_se = float(
        np.sqrt(
            np.mean(fixed[late]) * (1 - np.mean(fixed[late])) / n
            + np.mean(fixed[early]) * (1 - np.mean(fixed[early])) / n
        )
    )
    spread_fixed = float(fixed[9:].max() - fixed[9:].min())
    spread_adaptive = float(adaptive[9:].max() - adaptive[9:].min())
    mean_log, _ = pair.stationary_log_ratio_moments()
    every = max(1, horizon // 200)
    curves = {
        "t": t_all[::every].tolist(),
        "std": std[::every].tolist(),
        "sigma_hat": sigma_hat,
        "fixed": fixed[::every].tolist(),
        "adaptive": adaptive[::every].tolist(),
        "H": horizon,
        "n": n,
    }
    cells = {
        "t": ts.tolist(),
        "z_var_ratio": np.asarray(z5).tolist(),
        "z_var_log": np.asarray(z6).tolist(),
        "z_dependent": np.asarray(z6_dep).tolist(),
        "curves": curves,
    }
    z5m, z6m, zdm = (float(np.max(np.abs(z))) for z in (z5, z6, z6_dep))
    rho_s = stats.spearmanr(t_all[9:], fixed[9:]).statistic
    return [
        claim(
            "C5",
            f"Var(rho_t^cum) = (1 + chi2)^t - 1 by MC, H = {horizon}, {n} sequences, t in {ts.tolist()}",
            max_abs_z=z5m,
            estimate=float(var[-1]),
            se=float(se[-1]),
            theory=float(theory5[-1]),
            details=cells,
        ),
        claim(
            "C6",
            f"Var(log rho_t^cum) = t sigma^2 by MC (sigma^2 = {sigma2:.2e})",
            max_abs_z=z6m,
            estimate=float(lvar[-1]),
            se=float(lse[-1]),
            theory=float(ts[-1] * sigma2),
            details=cells,
        ),
        control(
            "C6",
            "log ratios correlated across positions (Markov pair): t sigma^2",
            max_abs_z=zdm,
            estimate=float(dvar[-1]),
            se=float(dse[-1]),
            theory=float(ts[-1] * dep_sigma2),
            details=cells,
        ),
        claim(
            "C7",
            f"fixed clipping [0.5, 5]: clip rate rises with t ({np.mean(fixed[early]):.3f} at t = 10-20, "
            f"{np.mean(fixed[late]):.3f} at t > H/2)",
            z=rise / rise_se,
            z_test="greater",
            estimate=rise,
            se=rise_se,
            theory=0.0,
            details=cells,
        ),
        claim(
            "C7",
            "sqrt(t)-adaptive clipping is flatter: "
            f"spread over t >= 10 {spread_adaptive:.3f} vs fixed {spread_fixed:.3f}",
            below=0.0,
            statistic=spread_adaptive - spread_fixed,
            stat_name="adaptive - fixed spread",
            estimate=spread_adaptive,
            theory=spread_fixed,
            details=cells,
        ),
        report(
            "C7",
            f"adaptive clip rate {adaptive[9]:.3f} at t = 10 -> {adaptive[-1]:.3f} at t = H: "
            f"E[log r] = {mean_log:.1e} drifts log rho_t^cum by t E[log r] "
            "while the bounds grow as sqrt(t); "
            f"std/sigma_hat sqrt(t) in [{np.min(std / (sigma_hat * np.sqrt(t_all))):.3f}, "
            f"{np.max(std / (sigma_hat * np.sqrt(t_all))):.3f}], "
            f"Spearman(fixed rate, t) = {rho_s:.2f}",
            details=cells,
            estimate=float(adaptive[-1]),
        ),
    ]


# --- C8, C9: objectives and their gradients ---------------------------------------------------


def _logit_gradient(e: Enumerated, idx, dlogp: np.ndarray) -> np.ndarray:
    return e.mdp.score_sum(dlogp, e.seqs[idx], e.states[idx], e.mdp.logits_theta)


def _batch_objective(e: Enumerated, idx, logits_theta, name: str, adv) -> float:
    lp_new = e.mdp.token_logp(logits_theta, e.seqs[idx], e.states[idx])
    return OBJECTIVES[name](lp_new, e.lp_b[idx], np.ones_like(lp_new, dtype=bool), adv)


def _sequence_weights(e: Enumerated, name: str, detach: bool = False, **clip) -> np.ndarray:
    """(N, H): d/d logp_t of one sequence's objective times |o| (the objectives average over
    tokens), for every sequence of ``e`` with the outcome advantage A = R - E_b[R]; one
    sequence's gradient is sum_t weights_t grad log pi(a_t | s_t), Prop 1's form."""
    mask = np.ones_like(e.lp_t, dtype=bool)
    d = objective_gradient(name, e.lp_t, e.lp_b, mask, e.reward - e.p_b @ e.reward, detach_prefix=detach, **clip)
    return d * mask.size  # the weights 1 / (N H) of the batch objective over all N sequences


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _regimes(mdp: TabularTokenMDP) -> dict:
    """theta = theta_old (on-policy) and the MDP's target policy (off-policy), enumerated."""
    return {"on-policy": Enumerated(mdp.with_theta(mdp.logits_b)), "off-policy": Enumerated(mdp)}


def run_objectives(config: RunConfig, rng: np.random.Generator) -> list[ClaimResult]:
    """C8 and C9 on one token MDP (V = 3, H = 6, logit perturbation 0.2)."""
    mdp = TabularTokenMDP.random(rng, vocab=3, horizon=6, delta=0.2)
    regimes = _regimes(mdp)
    return _objective_rows(regimes, rng) + _released_rows(config, regimes, rng)


def _objective_rows(regimes: dict, rng: np.random.Generator) -> list[ClaimResult]:
    """C8: the three objectives' gradients (chain rule vs finite differences), and the
    direction of their expected gradients against grad J, on-policy and off-policy."""
    e = regimes["off-policy"]
    mdp, horizon = e.mdp, e.mdp.horizon
    idx = rng.choice(len(e.p_b), size=64, p=e.p_b / e.p_b.sum())
    adv = e.reward[idx] - e.p_b @ e.reward
    fd_err = {}
    mask = np.ones((idx.size, horizon), dtype=bool)
    directions = rng.standard_normal((3,) + mdp.logits_theta.shape)
    for label, name, detach in (
        ("grpo", "grpo", False),
        ("gspo", "gspo", False),
        ("ctpo", "ctpo", False),
        ("ctpo detached", "ctpo", True),
    ):
        analytic = _logit_gradient(
            e, idx, objective_gradient(name, e.lp_t[idx], e.lp_b[idx], mask, adv, detach_prefix=detach)
        )
        errs = []
        for u in directions:
            h = 1e-6
            fd = (
                _batch_objective(e, idx, mdp.logits_theta + h * u, name, adv)
                - _batch_objective(e, idx, mdp.logits_theta - h * u, name, adv)
            ) / (2 * h)
            errs.append(abs(fd - np.sum(analytic * u)) / max(abs(fd), 1e-12))
        fd_err[label] = float(max(errs))
    detached_err = fd_err.pop("ctpo detached")
    cosines = {}
    for regime, ee in regimes.items():
        grad = ee.true_gradient()
        for (label, name, detach), clip in itertools.product(VARIANTS, (True, False)):
            if regime == "on-policy" and not clip:
                continue  # on-policy every ratio is 1: nothing is clipped
            weights = _sequence_weights(ee, name, detach, **({} if clip else NO_CLIP))
            key = f"{regime}{'' if clip else ', no clip'}: {label}"
            cosines[key] = _cosine(ee.score_sum(ee.p_b[:, None] * weights), grad)
    worst = max(fd_err.values())
    return [
        _exact_row(
            "C8",
            "claim",
            "objective gradients (theory.importance, chained to logits) = finite differences "
            f"({', '.join(f'{k} {v:.1e}' for k, v in fd_err.items())})",
            worst,
            1e-5,
            True,
            {"fd": fd_err},
        ),
        _exact_row(
            "C8",
            "control",
            f"Prop 1's estimator (prefix detached) as the CTPO objective's gradient (rel {detached_err:.2f})",
            detached_err,
            1e-5,
            True,
            {"fd": fd_err},
        ),
        report(
            "C8",
            "cos(E_b[grad objective], grad J): " + "; ".join(f"{k} {v:.3f}" for k, v in cosines.items()),
            details={"cosines": cosines},
            estimate=cosines["off-policy: CTPO"],
            theory=1.0,
        ),
    ]


def _gradient_moments(e: Enumerated, weights: np.ndarray) -> dict:
    """Bias, variance and cosine of one sequence's gradient sum_t weights_t grad log pi against
    grad J, exactly over every sequence: relative bias |E_b g - grad J| / |grad J|, variance
    E_b|g - E_b g|^2 / |grad J|^2 (divide by B for a batch of B sequences), cosine."""
    grad = e.true_gradient()
    mean = e.score_sum(e.p_b[:, None] * weights)
    scale = np.sum(grad**2)
    return {
        "bias": float(np.linalg.norm(mean - grad) / np.sqrt(scale)),
        "variance": float((e.p_b @ e.score_norm2(weights) - np.sum(mean**2)) / scale),
        "cosine": _cosine(mean, grad),
    }


RELEASED_ESTIMATORS = {  # label -> (objective_gradient's objective, detach_prefix)
    "released": ("ctpo_released", False),
    "paper surrogate": ("ctpo", False),
    "Prop 1 form": ("ctpo", True),  # the paper's clip on the prefix-detached ratio
}


def _on_policy_z(config: RunConfig, on: Enumerated, weights: dict, rng: np.random.Generator) -> tuple[dict, int]:
    """z of the Monte-Carlo mean of each estimator's gradient (6 random projections, sequences from
    pi_b = pi_theta) against grad J's projections; and the number of sequences."""
    n_mc = 200_000 if config.full else 40_000
    idx = rng.choice(len(on.p_b), size=n_mc, p=on.p_b / on.p_b.sum())
    directions = rng.standard_normal((6,) + on.mdp.logits_theta.shape)
    truth = np.einsum("ksa,sa->k", directions, on.true_gradient())
    z = {}
    for label in ("released", "paper surrogate"):
        mean, se = mean_se(_projected_samples(on, idx, weights[label], directions))
        z[label] = np.asarray(z_score(mean, se, truth))
    return z, n_mc


def _dual_clip_mismatch(off: Enumerated, weights: dict) -> tuple[dict, float]:
    """The prediction that an estimator's per-token gradient differs from Prop 1's form exactly at the
    tokens of the release's dual clip (A < 0 and rho_t^cum > e^(0.05 sqrt t)): for "released" and
    "paper surrogate", the P_b-weighted share of tokens where it fails; and the dual clip's share."""
    log_rho = np.cumsum(off.log_r, axis=1)
    adv = (off.reward - off.p_b @ off.reward)[:, None]
    dual = (adv < 0) & (log_rho > np.log(dual_clip_threshold(np.arange(1, off.mdp.horizon + 1))))
    mismatch = {}
    for label in ("released", "paper surrogate"):
        differs = ~np.isclose(weights[label], weights["Prop 1 form"], rtol=EXACT, atol=0.0)
        mismatch[label] = float(off.p_b @ np.mean(differs != dual, axis=1))
    return mismatch, float(off.p_b @ dual.mean(axis=1))


def _mismatch_row(row, what: str, mismatch: float, cells: dict) -> ClaimResult:
    """A ``claim`` or ``control`` (``row``) that an estimator departs from Prop 1's form exactly at
    the dual-clip tokens: holds when the share of tokens that break the rule (``mismatch``) is 0."""
    return row("C9", what, at_most=0.0, statistic=mismatch, stat_name="share mismatched", details=cells)


def _moments_text(moments: dict, regime: str) -> str:
    """Each estimator's bias / variance / cosine in one regime, as text."""
    parts = []
    for label in RELEASED_ESTIMATORS:
        m = moments[f"{regime}: {label}"]
        parts.append(f"{label} {m['bias']:.3f} / {m['variance']:.0f} / {m['cosine']:.3f}")
    return "; ".join(parts)


def _released_rows(config: RunConfig, regimes: dict, rng: np.random.Generator) -> list[ClaimResult]:
    """C9: the gradient CTPO's released code backpropagates (theory.importance.ctpo_released_objective)
    against grad J and beside the paper's surrogate, on-policy and off-policy: exact moments, a
    Monte-Carlo test of its mean on-policy, and the tokens where it departs from Prop 1's form."""
    weights = {
        regime: {label: _sequence_weights(e, *spec) for label, spec in RELEASED_ESTIMATORS.items()}
        for regime, e in regimes.items()
    }
    moments = {
        f"{regime}: {label}": _gradient_moments(regimes[regime], w)
        for regime, by_label in weights.items()
        for label, w in by_label.items()
    }
    on, off = regimes["on-policy"], regimes["off-policy"]
    exact = _rel(on.score_sum(on.p_b[:, None] * weights["on-policy"]["released"]), on.true_gradient())
    z, n_mc = _on_policy_z(config, on, weights["on-policy"], rng)
    mismatch, dual_share = _dual_clip_mismatch(off, weights["off-policy"])
    log_rho = np.cumsum(off.log_r, axis=1)
    cells = {
        "moments": moments,
        "z": {label: v.tolist() for label, v in z.items()},
        "n_mc": n_mc,
        "mismatch": mismatch,
        "dual_clip_token_share": dual_share,
        "max_abs_token_log_ratio": float(np.abs(off.log_r).max()),
        "max_log_cumulative_ratio": float(log_rho.max()),
    }
    return [
        _exact_row(
            "C9",
            "claim",
            f"on-policy, E_b[released gradient] = grad J with A = R - E_b[R] (exact, rel {exact:.1e})",
            exact,
            EXACT,
            True,
            cells,
        ),
        claim(
            "C9",
            f"... by Monte Carlo: 6 random projections, {n_mc} sequences",
            max_abs_z=float(np.max(np.abs(z["released"]))),
            details=cells,
        ),
        control(
            "C9",
            "the paper's surrogate's gradient (through the prefix ratios) in the same Monte-Carlo test",
            max_abs_z=float(np.max(np.abs(z["paper surrogate"]))),
            details=cells,
        ),
        _mismatch_row(
            claim,
            "off-policy, the released gradient departs from Prop 1's form (paper's clip) exactly at the "
            f"tokens of its dual clip (A < 0, rho_t^cum > e^(0.05 sqrt t): {dual_share:.1%} of tokens)",
            mismatch["released"],
            cells,
        ),
        _mismatch_row(
            control,
            f"the paper's surrogate's gradient, same rule (mismatch {mismatch['paper surrogate']:.1%} of tokens)",
            mismatch["paper surrogate"],
            cells,
        ),
        report(
            "C9",
            "relative bias / variance / cosine of one sequence's gradient against grad J; on-policy: "
            f"{_moments_text(moments, 'on-policy')}; off-policy: {_moments_text(moments, 'off-policy')} "
            f"(max |log r_t| {cells['max_abs_token_log_ratio']:.2f}, max log rho_t^cum "
            f"{cells['max_log_cumulative_ratio']:.2f}: the +-20 clamp and the cap at 10 do not bind)",
            details=cells,
            estimate=moments["off-policy: released"]["cosine"],
            theory=1.0,
        ),
    ]


CHECKS = [
    Check(
        "importance_unbiased", ("C1", "C2"), run_unbiased, "Prop 1 and the token ratio's bias, exact and Monte Carlo"
    ),
    Check(
        "importance_variance",
        ("C3", "C4", "C5", "C6"),
        run_variance_exact,
        "suffix ratio, Prop 2 and Var(log rho) by enumeration",
    ),
    Check(
        "importance_long_horizon",
        ("C5", "C6", "C7"),
        run_long_horizon,
        "Prop 2(ii), t sigma^2 and Fig. 1 clipping at long horizons",
    ),
    Check(
        "importance_objectives",
        ("C8", "C9"),
        run_objectives,
        "GRPO/GSPO/CTPO objectives and their gradients; CTPO's released loss against grad J",
    ),
]


if __name__ == "__main__":
    from simulators.cli import main

    raise SystemExit(main(topics=("importance",), prog="python -m simulators.importance"))
