"""Result records of the App. B tests, in the shape of scipy's results (statistic, pvalue)."""

from __future__ import annotations

import dataclasses

import numpy as np

from stats_tests.groups import Exclusions


@dataclasses.dataclass(frozen=True)
class CombinedCorrelationResult:
    """A per-question Pearson test combined across questions (B.1 Fisher, B.2 Edgington).

    ``dof`` is the chi-square degrees of freedom 2Q (Fisher) or None (Edgington, whose null
    law is Irwin-Hall(Q)); ``zero_pvalues`` counts per-group p-values of exactly 0 that
    were raised to the smallest positive float so that -2 ln p stays finite.
    """

    statistic: float
    pvalue: float
    method: str
    n_groups: int
    dof: int | None
    group_correlations: np.ndarray
    group_pvalues: np.ndarray
    excluded: Exclusions
    zero_pvalues: int = 0


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
