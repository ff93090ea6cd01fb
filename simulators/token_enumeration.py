"""Every sequence of a tabular token MDP at once, and the exact comparisons the C-checks make on it.

Shared by :mod:`simulators.importance` (C1-C7) and :mod:`simulators.importance_objectives`
(C8, C9). Reward: R = 1 when the tokens sum to 0 mod 3, else 0.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from simulators.ledger import ClaimResult, decided
from simulators.token_mdp import TabularTokenMDP, prefix_mean
from theory.importance import chi2_divergence

EXACT = 1e-9  # relative tolerance of an exact identity in floating point


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


def relative_error(a, b) -> float:
    return float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / max(np.linalg.norm(np.ravel(b)), 1e-300))


def exact_row(claim_id, kind, what, value, threshold, below: bool, details=None) -> ClaimResult:
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


def projected_samples(e: Enumerated, idx: np.ndarray, weights: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """u_k . (sum_t weights_t grad log pi(a_t | s_t)) for the sampled sequences ``idx`` (weights:
    ratio_t A_t of every enumerated sequence)."""
    pt = softmax(e.mdp.logits_theta, axis=-1)
    # u . score(s, a) = u[s, a] - sum_a' pi(a' | s) u[s, a'], for every direction, state and token
    proj = directions - np.einsum("sa,ksa->ks", pt, directions)[:, :, None]
    states, seqs = e.states[idx], e.seqs[idx]
    return np.einsum("nt,knt->kn", weights[idx], proj[:, states, seqs])
