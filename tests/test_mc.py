"""The Monte-Carlo statistics: standard errors are calibrated, degenerate cells are exact."""

import numpy as np
import pytest

from simulators import mc


def test_variance_se_is_calibrated():
    # Across many replicates, the spread of s^2 must match the SE estimated within each replicate.
    rng = np.random.default_rng(0)
    samples = rng.gamma(2.0, 1.0, size=(4000, 400))
    var, se = mc.variance_se(samples, axis=1)
    assert np.std(var) == pytest.approx(np.mean(se), rel=0.08)
    assert np.mean(var) == pytest.approx(2.0, rel=0.01)


def test_mean_se_matches_textbook():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean, se = mc.mean_se(x)
    assert mean == 2.5 and se == pytest.approx(np.std(x, ddof=1) / 2)


def test_z_score_exact_cells():
    assert mc.z_score(0.0, 0.0, 0.0) == 0.0
    assert mc.z_score(0.1, 0.0, 0.0) == np.inf
    assert mc.z_score(1.2, 0.1, 1.0) == pytest.approx(2.0)
