"""Equal-variance tests of VIP App. B.3 (Levene, median centring) and B.4 (O'Brien).

H0: Var(Z_q) is the same for every question q. Both tests transform each observation,
then run a one-way ANOVA F test on the transformed values with (Q - 1, N - Q) degrees of
freedom. The transforms and the statistic W are written out as the appendix states them
(that is what this module checks); the test suite cross-checks them against
scipy.stats.levene(center="median"), scipy.stats.obrientransform + f_oneway and
statsmodels' test_scale_oneway.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from stats_tests.groups import Exclusions, by_size, usable_groups
from stats_tests.results import VarianceTestResult


def _flatten(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All observations, the group index of each, and the group sizes."""
    sizes = np.array([g.size for g in groups])
    return np.concatenate(groups), np.repeat(np.arange(sizes.size), sizes), sizes


def _rescaled(groups: list[np.ndarray]) -> list[np.ndarray]:
    """The groups times the power of two 2^-e that brings max |Z| into [0.5, 1).

    W of B.3/B.4 does not change under a common scale c > 0 of Z (Y scales by c or c^2, and W
    is a ratio of sums of squares of Y), and multiplying by a power of two is exact in floating
    point, so W is the same to the last bit; but O'Brien's (Z - mean)^2 and the squares of Y
    in W no longer overflow to inf (then NaN) for norms up to the largest float.
    """
    exponent = np.frexp(max(float(np.max(np.abs(g))) for g in groups))[1]
    return [np.ldexp(g, -exponent) for g in groups]


def _group_means(values: np.ndarray, labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.bincount(labels, weights=values, minlength=sizes.size) / sizes


def levene_transform(groups: list[np.ndarray]) -> np.ndarray:
    """B.3: Y_qj = |Z_qj - median_q(Z)| (flattened in group order)."""
    y = [None] * len(groups)
    for idx, rows in by_size(groups):
        for i, row in zip(idx, np.abs(rows - np.median(rows, axis=1, keepdims=True))):
            y[i] = row
    return np.concatenate(y)


def obrien_transform(groups: list[np.ndarray]) -> np.ndarray:
    """B.4: Y_qj = ((n_q - 1.5) n_q (Z_qj - mean_q)^2 - 0.5 s_q^2 (n_q - 1)) / ((n_q - 1)(n_q - 2)),
    s_q^2 the unbiased variance; the group mean of Y_q equals s_q^2. Needs n_q >= 3."""
    z, labels, sizes = _flatten(groups)
    n = sizes[labels].astype(float)
    dev2 = (z - _group_means(z, labels, sizes)[labels]) ** 2
    s2 = (np.bincount(labels, weights=dev2, minlength=sizes.size) / (sizes - 1))[labels]
    return ((n - 1.5) * n * dev2 - 0.5 * s2 * (n - 1)) / ((n - 1) * (n - 2))


def anova_w(y: np.ndarray, labels: np.ndarray, sizes: np.ndarray) -> tuple[float, tuple[int, int]]:
    """W = (N - Q) sum_q n_q (Ybar_q - Ybar)^2 / ((Q - 1) sum_qj (Y_qj - Ybar_q)^2) (B.3/B.4)."""
    q, n_total = sizes.size, int(sizes.sum())
    means = _group_means(y, labels, sizes)
    between = np.sum(sizes * (means - y.mean()) ** 2)
    within = np.sum((y - means[labels]) ** 2)
    if within == 0.0:
        raise ValueError(
            "norms: every group has zero within-group dispersion after the transform (constant groups); W is undefined"
        )
    return float((n_total - q) * between / ((q - 1) * within)), (q - 1, n_total - q)


def _f_test(method: str, y: np.ndarray, groups: list[np.ndarray], excluded: Exclusions) -> VarianceTestResult:
    _, labels, sizes = _flatten(groups)
    w, dof = anova_w(y, labels, sizes)
    return VarianceTestResult(
        statistic=w,
        pvalue=float(stats.f.sf(w, *dof)),
        method=method,
        n_groups=sizes.size,
        n_observations=int(sizes.sum()),
        dof=dof,
        excluded=excluded,
    )


def levene_test(groups) -> VarianceTestResult:
    """App. B.3: Levene's test with median centring (Brown-Forsythe); p = P(F(Q-1, N-Q) >= W).

    ``groups``: one array of Z values per question (list of 1-D arrays or a 2-D array);
    groups of size < 3 are excluded and counted (:mod:`stats_tests.groups`).
    """
    groups, excluded = usable_groups("groups", groups)
    groups = _rescaled(groups)
    return _f_test("levene-median", levene_transform(groups), groups, excluded)


def obrien_test(groups) -> VarianceTestResult:
    """App. B.4: O'Brien's transform, then the one-way ANOVA F test; p = P(F(Q-1, N-Q) >= W_OB)."""
    groups, excluded = usable_groups("groups", groups)
    groups = _rescaled(groups)
    return _f_test("obrien", obrien_transform(groups), groups, excluded)
