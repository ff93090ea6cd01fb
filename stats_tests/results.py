"""Result records of the App. B tests, in the shape of scipy's results (statistic, pvalue)."""

from __future__ import annotations

import dataclasses

import numpy as np

from stats_tests.groups import Exclusions


@dataclasses.dataclass(frozen=True)
class CombinedCorrelationResult:
    """A per-question Pearson test combined across questions (B.1 Fisher, B.2 Edgington).

    ``dof`` is the chi-square degrees of freedom 2Q (Fisher) or None (Edgington, whose null
    law is Irwin-Hall(Q)); ``collinear`` counts the questions whose |r| lies within rounding of
    1, which are given the p-value of |r| = 1 - R_TOLERANCE (stats_tests.correlation).
    """

    statistic: float
    pvalue: float
    method: str
    n_groups: int
    dof: int | None
    group_correlations: np.ndarray
    group_pvalues: np.ndarray
    excluded: Exclusions
    collinear: int = 0


@dataclasses.dataclass(frozen=True)
class VarianceTestResult:
    """A one-way ANOVA F test on transformed observations (B.3 Levene, B.4 O'Brien)."""

    statistic: float
    pvalue: float
    method: str
    n_groups: int
    n_observations: int
    dof: tuple[int, int]
    excluded: Exclusions
