"""Per-prompt gradient variance of group-baseline estimators (VIP §4, App. A.1, App. E.1).

Notation of VIP §4: a prompt gets ``n`` rollouts with rewards R_j and projected
gradient norms Z_j = ||H(o_j)||_2 (H: token-averaged log-likelihood gradient).
The per-prompt projected gradient is

    G = (1/n) * sum_j A_j * Z_j,

with the Dr. GRPO advantage A_j = R_j - mean(R) or the RLOO advantage
A_j = R_j - mean_{k != j}(R_k). Both advantages are linear in the rewards,
A = C R with C_jj = c_same and C_jk = c_diff (j != k); see
:func:`advantage_coefficients`.

Note on the text: VIP §4 prints the RLOO baseline with a 1/n factor; RLOO's own
definition (§3) and the proof of Prop 4.3 use 1/(n-1), which is what this module
implements. Since A_RLOO = n/(n-1) * A_DrGRPO exactly, Var_RLOO / Var_DrGRPO is
n^2/(n-1)^2 for every reward distribution.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from theory import checks

ESTIMATORS = ("dr_grpo", "rloo")


def advantage_coefficients(estimator: str, n):
    """Return ``(c_same, c_diff)`` of the linear advantage map A = C R (VIP §3).

    Dr. GRPO: c_same = 1 - 1/n, c_diff = -1/n.
    RLOO:     c_same = 1,       c_diff = -1/(n-1).
    """
    checks.choice("estimator", estimator, ESTIMATORS)
    n = _group_size(estimator, n)
    if estimator == "dr_grpo":
        return 1.0 - 1.0 / n, -1.0 / n
    return np.ones_like(n), -1.0 / (n - 1.0)


def group_advantages(rewards, estimator: str) -> np.ndarray:
    """Advantages of one or many groups; groups lie along the last axis (VIP §3).

    ``rewards`` has shape (..., n). Dr. GRPO subtracts the group mean, RLOO the
    leave-one-out mean of the n - 1 other rollouts.
    """
    checks.choice("estimator", estimator, ESTIMATORS)
    rewards = checks.as_float_array("rewards", rewards)
    if rewards.ndim == 0:
        raise ValueError("rewards must have a group axis (shape (..., n)); got a scalar")
    n = rewards.shape[-1]
    _group_size(estimator, n)
    total = rewards.sum(axis=-1, keepdims=True)
    if estimator == "dr_grpo":
        return rewards - total / n
    return rewards - (total - rewards) / (n - 1)


def standardised_advantages(rewards, eps: float = 1e-6) -> np.ndarray:
    """GRPO's advantage (DeepSeekMath §4.1.2): (R_j - mean(R)) / (std(R) + eps) within each group
    (last axis), with the sample standard deviation (ddof = 1, as TRL computes it). A constant
    group gets advantage 0. Not linear in R, so the variance formulas above do not cover it.
    """
    rewards = checks.as_float_array("rewards", rewards)
    if rewards.ndim == 0 or rewards.shape[-1] < 2:
        raise ValueError(f"rewards must have a group axis of size >= 2 (shape (..., n)); got shape {rewards.shape}")
    centred = group_advantages(rewards, "dr_grpo")
    return centred / (rewards.std(axis=-1, ddof=1, keepdims=True) + float(checks.nonnegative("eps", eps)))


def projected_gradient(rewards, norms, estimator: str) -> np.ndarray:
    """The per-prompt projected gradient G = (1/n) sum_j A_j Z_j (VIP §4, eq. after (4)).

    ``rewards`` and ``norms`` have the same shape (..., n); the result has shape (...).
    """
    rewards = checks.as_float_array("rewards", rewards)
    norms = checks.as_float_array("norms", norms)
    if rewards.shape != norms.shape:
        raise ValueError(f"rewards and norms must have the same shape; got {rewards.shape} and {norms.shape}")
    return np.mean(group_advantages(rewards, estimator) * norms, axis=-1)


def gradient_variance(estimator: str, n, *, p=None, reward_var=None, sigma_z2=1.0):
    """Var(G) under Assumption 4.1, vectorised over ``n``, ``p``, ``reward_var``, ``sigma_z2``.

    - Dr. GRPO (Prop 4.2 / Prop E.1): (n - 1) / n^2 * sigma_z2 * Var(R).
    - RLOO (Prop 4.3 / Prop E.2): sigma_z2 * Var(R) / (n - 1).

    Give exactly one of ``p`` (binary rewards in {+1, -1} with P(R = +1) = p, so
    Var(R) = 4 p (1 - p)) or ``reward_var`` (continuous rewards, App. E.1).
    ``n`` may be real-valued (the relaxed allocation problem uses it so); it
    must be >= 1 for Dr. GRPO and >= 2 for RLOO.
    """
    checks.choice("estimator", estimator, ESTIMATORS)
    var_r = _reward_variance(p, reward_var)
    sigma_z2 = checks.nonnegative("sigma_z2", sigma_z2)
    n = _group_size(estimator, n)
    if estimator == "dr_grpo":
        factor = (n - 1.0) / n**2
    else:
        factor = 1.0 / (n - 1.0)
    return factor * sigma_z2 * var_r


def gradient_mean_iid(estimator: str, n, moments) -> np.ndarray:
    """E[G] when the pairs (R_j, Z_j) are i.i.d. but R and Z may be correlated.

    Our derivation (Assumption 4.1(i) only): E[G] = c_same E[RZ] + (n-1) c_diff E[R] E[Z],
    i.e. (n-1)/n * Cov(R, Z) for Dr. GRPO and Cov(R, Z) for RLOO. It is 0 exactly
    when Cov(R, Z) = 0, as Props 4.2/4.3 state.

    ``moments`` maps (a, b) to E[R^a Z^b] for a, b in {0, 1, 2}.
    """
    c_same, c_diff = advantage_coefficients(estimator, n)
    n = np.asarray(n, dtype=float)
    mu_r, mu_z, m_rz = moments[(1, 0)], moments[(0, 1)], moments[(1, 1)]
    return c_same * m_rz + (n - 1.0) * c_diff * mu_r * mu_z


def gradient_variance_iid(estimator: str, n, moments) -> np.ndarray:
    """Var(G) exactly, when the pairs (R_j, Z_j) are i.i.d. with arbitrary dependence.

    This generalises Props 4.2/4.3/E.1/E.2 by dropping Assumption 4.1(ii); it is
    our derivation, used to explain the V4 violation map. Write
    E[G^2] = n^-2 sum_{j, j', k, k'} C_jk C_j'k' E[R_k Z_j R_k' Z_j']. The summand
    depends only on which of the four indices coincide, so the sum runs over the
    15 set partitions of {k, j, k', j'}: a partition with m blocks is realised by
    n (n-1) ... (n-m+1) index tuples, C_jk is c_same when j and k share a block,
    and the expectation factorises over blocks into mixed moments E[R^a Z^b].

    ``moments`` maps (a, b) to E[R^a Z^b] for a, b in {0, 1, 2}; see
    :func:`independent_moments` for the case of Assumption 4.1.
    """
    c_same, c_diff = advantage_coefficients(estimator, n)
    n = np.asarray(n, dtype=float)
    second = np.zeros(np.broadcast(n, c_same).shape)
    for blocks in _index_partitions():
        n_tuples = np.ones_like(n)
        for i in range(len(blocks)):
            n_tuples = n_tuples * (n - i)
        coef_jk = c_same if _same_block(blocks, "k", "j") else c_diff
        coef_j2k2 = c_same if _same_block(blocks, "k2", "j2") else c_diff
        expectation = 1.0
        for block in blocks:
            a = sum(1 for v in block if v in ("k", "k2"))
            expectation = expectation * moments[(a, len(block) - a)]
        second = second + n_tuples * coef_jk * coef_j2k2 * expectation
    mean = gradient_mean_iid(estimator, n, moments)
    return second / n**2 - mean**2


def independent_moments(mean_r, var_r, mean_z, var_z) -> dict:
    """Mixed moments E[R^a Z^b] when R and Z are independent (Assumption 4.1(ii))."""
    r = (1.0, mean_r, var_r + mean_r**2)
    z = (1.0, mean_z, var_z + mean_z**2)
    return {(a, b): r[a] * z[b] for a in range(3) for b in range(3)}


def _reward_variance(p, reward_var) -> np.ndarray:
    if (p is None) == (reward_var is None):
        raise ValueError("give exactly one of p (binary rewards) or reward_var (continuous rewards)")
    if p is not None:
        p = checks.probability("p", p)
        return 4.0 * p * (1.0 - p)
    return checks.nonnegative("reward_var", reward_var)


def _group_size(estimator: str, n) -> np.ndarray:
    minimum = 1.0 if estimator == "dr_grpo" else 2.0
    return checks.at_least(f"n ({estimator})", n, minimum)


@lru_cache(maxsize=1)
def _index_partitions() -> tuple:
    """The 15 set partitions of the index labels {k, j, k2, j2} of E[G^2].

    Written by hand: a four-element set partition is six lines, not worth a
    dependency (sympy would be the library for it).
    """
    partitions = [[]]
    for label in ("k", "j", "k2", "j2"):
        grown = []
        for blocks in partitions:
            for i in range(len(blocks)):
                grown.append(blocks[:i] + [blocks[i] + (label,)] + blocks[i + 1 :])
            grown.append(blocks + [(label,)])
        partitions = grown
    return tuple(tuple(blocks) for blocks in partitions)


def _same_block(blocks, first: str, second: str) -> bool:
    return any(first in block and second in block for block in blocks)
