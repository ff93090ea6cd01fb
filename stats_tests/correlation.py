"""First-order correlation tests of VIP App. B.1 (Fisher) and B.2 (Edgington).

H0: rho_q = Corr(R_q, Z_q) = 0 for every question q. Each question's two-sided Pearson
p-value (scipy.stats.pearsonr) is combined across the Q usable questions.

A question whose |r| lies within :data:`R_TOLERANCE` of 1 is collinear within rounding: its r
and p are decided by the last bits of the floats (an affine map of the rewards moves
1 - |r| between 0 and 2e-16, and p between 0 and 1e-50), so it is given the p-value of
|r| = 1 - R_TOLERANCE, the smallest p a correlation short of rounding can have. Then every
p-value is the same, to rounding, under any affine map of the rewards and any positive scaling
of the norms (tests/test_stats_tests.py).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from stats_tests.groups import by_size, usable_pairs
from stats_tests.results import CombinedCorrelationResult
from theory import checks

EDGINGTON_METHODS = ("exact", "normal")
# far above the rounding of r (a few eps times the group size) and far below 1 - |r| of any
# sample short of exact collinearity
R_TOLERANCE = 1e-12


def group_pearson(rewards: list[np.ndarray], norms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-group Pearson r and two-sided p-value, in the order of the groups.

    Groups of equal size are stacked and passed to ``scipy.stats.pearsonr(axis=1)`` in one
    call, so Q = 600 questions cost one vectorised call per distinct group size.
    A group with 1 - |r| <= R_TOLERANCE gets the p-value of |r| = 1 - R_TOLERANCE (module
    docstring), from the null law of r that pearsonr uses: Beta(n/2 - 1, n/2 - 1) on [-1, 1].
    """
    r, p = np.empty(len(rewards)), np.empty(len(rewards))
    for (idx, x), (_, y) in zip(by_size(rewards), by_size(norms)):
        res = stats.pearsonr(x, y, axis=1)
        r[idx], p[idx] = res.statistic, res.pvalue
        collinear = 1.0 - np.abs(res.statistic) <= R_TOLERANCE
        if collinear.any():
            half = x.shape[1] / 2 - 1
            p[idx[collinear]] = 2 * stats.beta(half, half, loc=-1, scale=2).sf(1.0 - R_TOLERANCE)
    return r, p


def collinear_count(r: np.ndarray) -> int:
    """How many groups are collinear within rounding (1 - |r| <= R_TOLERANCE)."""
    return int(np.sum(1.0 - np.abs(r) <= R_TOLERANCE))


def _raise_zeros(p: np.ndarray) -> np.ndarray:
    """Per-group p-values that underflow to 0 (a collinear group of 64 rollouts or more, or a
    larger one with |r| near 1) raised to the smallest positive float, so Fisher's statistic
    stays finite."""
    return np.maximum(p, np.finfo(float).tiny)


def fisher_correlation_test(rewards, norms) -> CombinedCorrelationResult:
    """App. B.1: chi2_Fisher = -2 sum_q ln p_q ~ chi2(2Q) under H0; p_global = P(chi2(2Q) >= chi2_Fisher).

    ``rewards`` and ``norms``: one array per question (list of 1-D arrays, sizes may
    differ, or a 2-D array). Exclusions: see :mod:`stats_tests.groups`.
    """
    r_groups, z_groups, excluded = usable_pairs(rewards, norms)
    r, p = group_pearson(r_groups, z_groups)
    p = _raise_zeros(p)
    combined = stats.combine_pvalues(p, method="fisher")
    return CombinedCorrelationResult(
        statistic=float(combined.statistic),
        pvalue=float(combined.pvalue),
        method="fisher",
        n_groups=p.size,
        dof=2 * p.size,
        group_correlations=r,
        group_pvalues=p,
        excluded=excluded,
        collinear=collinear_count(r),
    )


def edgington_correlation_test(rewards, norms, method: str = "exact") -> CombinedCorrelationResult:
    """App. B.2: S_Ed = sum_q p_q ~ Irwin-Hall(Q) under H0; small S is evidence against H0.

    p_global = P(Irwin-Hall(Q) <= S) with ``method="exact"`` (scipy.stats.irwinhall; scipy's
    combine_pvalues has no Edgington method), or the paper's normal approximation
    Phi((S - Q/2) / sqrt(Q/12)) with ``method="normal"``. (B.2 says "alpha = 0.5" before its
    decision rule; its decision uses 0.05, which is what this project uses.)
    """
    checks.choice("method", method, EDGINGTON_METHODS)
    r_groups, z_groups, excluded = usable_pairs(rewards, norms)
    r, p = group_pearson(r_groups, z_groups)
    q = p.size
    s = float(p.sum())
    if method == "exact":
        pvalue = float(stats.irwinhall(q).cdf(s))
    else:
        pvalue = float(stats.norm.cdf((s - q / 2) / np.sqrt(q / 12)))
    return CombinedCorrelationResult(
        statistic=s,
        pvalue=pvalue,
        method=f"edgington-{method}",
        n_groups=q,
        dof=None,
        group_correlations=r,
        group_pvalues=p,
        excluded=excluded,
    )
