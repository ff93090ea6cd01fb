"""First-order correlation tests of VIP App. B.1 (Fisher) and B.2 (Edgington).

H0: rho_q = Corr(R_q, Z_q) = 0 for every question q. Each question's two-sided Pearson
p-value (scipy.stats.pearsonr) is combined across the Q usable questions.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from stats_tests.groups import by_size, usable_pairs
from stats_tests.results import CombinedCorrelationResult
from theory import _checks

EDGINGTON_METHODS = ("exact", "normal")


def group_pearson(rewards: list[np.ndarray], norms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-group Pearson r and two-sided p-value, in the order of the groups.

    Groups of equal size are stacked and passed to ``scipy.stats.pearsonr(axis=1)`` in one
    call, so Q = 600 questions cost one vectorised call per distinct group size.
    """
    r, p = np.empty(len(rewards)), np.empty(len(rewards))
    for (idx, x), (_, y) in zip(by_size(rewards), by_size(norms)):
        res = stats.pearsonr(x, y, axis=1)
        r[idx], p[idx] = res.statistic, res.pvalue
    return r, p


def _raise_zeros(p: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-group p-values of exactly 0 (|r| = 1) raised to the smallest positive float."""
    zeros = int(np.sum(p <= 0.0))
    return np.maximum(p, np.finfo(float).tiny), zeros


def fisher_correlation_test(rewards, norms) -> CombinedCorrelationResult:
    """App. B.1: chi2_Fisher = -2 sum_q ln p_q ~ chi2(2Q) under H0; p_global = P(chi2(2Q) >= chi2_Fisher).

    ``rewards`` and ``norms``: one array per question (list of 1-D arrays, sizes may
    differ, or a 2-D array). Exclusions: see :mod:`stats_tests.groups`.
    """
    r_groups, z_groups, excluded = usable_pairs(rewards, norms)
    r, p = group_pearson(r_groups, z_groups)
    p, zeros = _raise_zeros(p)
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
        zero_pvalues=zeros,
    )


def edgington_correlation_test(rewards, norms, method: str = "exact") -> CombinedCorrelationResult:
    """App. B.2: S_Ed = sum_q p_q ~ Irwin-Hall(Q) under H0; small S is evidence against H0.

    p_global = P(Irwin-Hall(Q) <= S) with ``method="exact"`` (scipy.stats.irwinhall; scipy's
    combine_pvalues has no Edgington method), or the paper's normal approximation
    Phi((S - Q/2) / sqrt(Q/12)) with ``method="normal"``. (B.2 says "alpha = 0.5" before its
    decision rule; its decision uses 0.05, which is what this project uses.)
    """
    _checks.choice("method", method, EDGINGTON_METHODS)
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
