"""Misuse of the public functions of theory and stats_tests: booleans, text, non-integer counts
and out-of-range values are refused with the argument named (theory._checks), never read as
numbers; each row's control is the same call with a valid value, which returns a number."""

import numpy as np
import pytest

from stats_tests import fisher_correlation_test, levene_test
from theory.allocation import allocate, success_variance_weights
from theory.bounds import alpha, optimal_tau, rollout_bound
from theory.predictor import success_rates
from theory.variance import group_advantages

GOOD_P = [0.2, 0.5, 0.7]
NORMS = [[1.0, 2.0, 3.5], [0.5, 0.7, 2.0]]
CASES = [
    # (call with a bad value, the same call with a good one, exception, words)
    (lambda: alpha(True, 8, 0.1), lambda: alpha(16, 8, 0.1), TypeError, "n must be a real number; got bool"),
    (lambda: alpha("16", 8, 0.1), lambda: alpha(16, 8, 0.1), TypeError, "n must be a real number; got str"),
    (lambda: alpha(16, 2.5, 0.1), lambda: alpha(16, 2, 0.1), ValueError, "K must be an integer >= 1"),
    (lambda: alpha(16, 8, "0.1"), lambda: alpha(16, 8, 0.1), TypeError, "delta must be a real number"),
    (lambda: rollout_bound(16, 8, 0.1, True, 1.0), lambda: rollout_bound(16, 8, 0.1, 1.0, 1.0), TypeError, "beta"),
    (lambda: rollout_bound(16, 8, 0.1, 0.1, -1.0), lambda: rollout_bound(16, 8, 0.1, 0.1, 1.0), ValueError, "tau"),
    (lambda: optimal_tau(["1", "2"], 16, 8, 0.1), lambda: optimal_tau([1.0, 2.0], 16, 8, 0.1), TypeError, "text"),
    (
        lambda: success_variance_weights([True, False, True]),
        lambda: success_variance_weights(GOOD_P),
        TypeError,
        "not booleans",
    ),
    (lambda: success_variance_weights([0.2, 1.5]), lambda: success_variance_weights(GOOD_P), ValueError, "[0, 1]"),
    (
        lambda: allocate(success_variance_weights(GOOD_P), 12.5, 3, 8, "dr_grpo"),
        lambda: allocate(success_variance_weights(GOOD_P), 12, 3, 8, "dr_grpo"),
        ValueError,
        "budget must be a finite integer",
    ),
    (
        lambda: allocate(success_variance_weights(GOOD_P), 12, True, 8, "dr_grpo"),
        lambda: allocate(success_variance_weights(GOOD_P), 12, 3, 8, "dr_grpo"),
        ValueError,
        "lower must be an integer",
    ),
    (lambda: success_rates([[True, False, True]]), lambda: success_rates([[1.0, 0.0, 1.0]]), TypeError, "rewards[0]"),
    (lambda: group_advantages(["1", "0", "1"], "rloo"), lambda: group_advantages([1, 0, 1], "rloo"), TypeError, "text"),
    (
        lambda: fisher_correlation_test([["1", "0", "1"], [0, 1, 1]], NORMS),
        lambda: fisher_correlation_test([[1, 0, 1], [0, 1, 1]], NORMS),
        TypeError,
        "rewards[0] must hold real numbers",
    ),
    (lambda: levene_test([[True, False, True], [1.0, 2.0, 3.0]]), lambda: levene_test(NORMS), TypeError, "groups[0]"),
    (lambda: levene_test([[1.0, None, 2.0], [1.0, 2.0, 3.0]]), lambda: levene_test(NORMS), TypeError, "NoneType"),
]


@pytest.mark.parametrize("bad, good, error, words", CASES, ids=[c[3] for c in CASES])
def test_a_bad_argument_is_refused_by_name_and_the_good_one_is_not(bad, good, error, words):
    with pytest.raises(error) as info:
        bad()
    assert words in str(info.value)
    result = good()
    values = np.atleast_1d(getattr(result, "pvalue", result)).astype(float)
    assert np.all(np.isfinite(values))
