"""Monte-Carlo estimates with standard errors from the same samples.

The ledger's rule: an estimate is compared with the theory by a z-score whose standard
error is estimated from the very samples that gave the estimate.
"""

from __future__ import annotations

import numpy as np


def mean_se(samples, axis: int = -1):
    """Sample mean and its standard error s / sqrt(N)."""
    x = np.asarray(samples, dtype=float)
    n = x.shape[axis]
    return x.mean(axis=axis), x.std(axis=axis, ddof=1) / np.sqrt(n)


def variance_se(samples, axis: int = -1):
    """Unbiased sample variance and its standard error.

    Var(s^2) = (mu_4 - sigma^4 (N - 3) / (N - 1)) / N for i.i.d. samples, with the
    central moments replaced by their sample values.
    """
    x = np.asarray(samples, dtype=float)
    n = x.shape[axis]
    centred = x - x.mean(axis=axis, keepdims=True)
    m2 = np.mean(centred**2, axis=axis)
    m4 = np.mean(centred**4, axis=axis)
    var = m2 * n / (n - 1)
    var_of_var = np.maximum(m4 - var**2 * (n - 3) / (n - 1), 0.0) / n
    return var, np.sqrt(var_of_var)


def z_score(estimate, se, theory):
    """(estimate - theory) / se; 0 when both agree exactly with se = 0, inf otherwise.

    The se = 0 case arises for degenerate cells (p in {0, 1}: every group has one
    reward, so G is identically 0); there the comparison is exact.
    """
    estimate, se, theory = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (estimate, se, theory)))
    diff = estimate - theory
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / se
    exact = se == 0
    z = np.where(exact, np.where(np.abs(diff) <= 1e-12 * (1 + np.abs(theory)), 0.0, np.inf), z)
    return z if z.ndim else float(z)
