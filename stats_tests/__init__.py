"""Assumption tests of VIP Appendix B (claim V11), usable on rollout logs.

- :func:`fisher_correlation_test` (B.1) and :func:`edgington_correlation_test` (B.2):
  is Corr(R, Z) = 0 within every question?
- :func:`levene_test` (B.3) and :func:`obrien_test` (B.4): is Var(Z) equal across questions?

``python -m stats_tests LOG`` runs all four on a rollout log (:mod:`stats_tests.rollout_log`).
"""

from stats_tests.correlation import edgington_correlation_test, fisher_correlation_test
from stats_tests.variance_homogeneity import levene_test, obrien_test

__all__ = ["fisher_correlation_test", "edgington_correlation_test", "levene_test", "obrien_test"]
