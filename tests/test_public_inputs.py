"""Misuse of the public functions of theory, stats_tests and the trainer: booleans, text,
non-integer counts and out-of-range values are refused with the argument named (theory.checks),
never read as numbers; each row's control is the same call with a valid value, which returns a
number."""

import numpy as np
import pytest
import torch

from stats_tests import fisher_correlation_test, levene_test
from theory.allocation import allocate, marginal_value, success_variance_weights, total_objective
from theory.bounds import alpha, optimal_tau, rollout_bound
from theory.predictor import success_rates
from theory.variance import group_advantages
from trainer.advantages import rollout_advantages, zero_variance_fraction
from trainer.losses import kl_penalty
from trainer.metrics import maj_at_k, mean_at_k, pass_at_k, summarise
from trainer.rewards import checked_rewards, same_answer, scaled
from trainer.selection import success_means

GOOD_P = [0.2, 0.5, 0.7]
NORMS = [[1.0, 2.0, 3.5], [0.5, 0.7, 2.0]]
CASES = [
    # (call with a bad value, the same call with a good one, exception, words)
    (lambda: alpha(True, 8, 0.1), lambda: alpha(16, 8, 0.1), ValueError, "n must be an integer; got True"),
    (lambda: alpha("16", 8, 0.1), lambda: alpha(16, 8, 0.1), ValueError, "n must be an integer; got '16'"),
    (lambda: alpha(16, 2.5, 0.1), lambda: alpha(16, 2, 0.1), ValueError, "K must be a finite integer; got 2.5"),
    (lambda: alpha(16, 0, 0.1), lambda: alpha(16, 2, 0.1), ValueError, "K must be an integer >= 1"),
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
    (
        lambda: total_objective([1.0, 2.0], [True, 4], "rloo"),
        lambda: total_objective([1.0, 2.0], [3, 4], "rloo"),
        TypeError,
        "n must hold real numbers; got bool True",
    ),
    (
        lambda: total_objective([1.0, 2.0], [1, 4], "rloo"),
        lambda: total_objective([1.0, 2.0], [2, 4], "rloo"),
        ValueError,
        "n must be >= 2",
    ),
    (
        lambda: marginal_value([-1.0, 2.0], [3, 4], "dr_grpo"),
        lambda: marginal_value([1.0, 2.0], [3, 4], "dr_grpo"),
        ValueError,
        "a must be >= 0",
    ),
    # the trainer
    (lambda: same_answer("5", 5), lambda: same_answer("5", "5"), TypeError, "answer must be text (str); got int 5"),
    (lambda: same_answer(5, "5"), lambda: same_answer(None, "5"), TypeError, "predicted must be text (str) or None"),
    (lambda: pass_at_k(8, True, 1), lambda: pass_at_k(8, 1, 1), ValueError, "c must be an integer; got True"),
    (lambda: pass_at_k(8.5, 2, 1), lambda: pass_at_k(8, 2, 1), ValueError, "n must be a finite integer; got 8.5"),
    (lambda: mean_at_k(["1", "0"]), lambda: mean_at_k([True, False]), TypeError, "correct must hold real numbers"),
    (lambda: mean_at_k([1, 0, 2]), lambda: mean_at_k([1, 0, 1]), ValueError, "correct must hold booleans or 0/1"),
    (lambda: maj_at_k(["5", "6"], [1]), lambda: maj_at_k(["5", "6"], [1, 0]), ValueError, "one length; got 2 and 1"),
    (
        lambda: summarise([[1, 0]], [], [1]),
        lambda: summarise([[1, 0]], [["5", "6"]], [1]),
        ValueError,
        "one entry per problem",
    ),
    (
        lambda: summarise([[1, 0]], [["5", "6"]], [True]),
        lambda: summarise([[1, 0]], [["5", "6"]], [1]),
        ValueError,
        "k must be an integer; got True",
    ),
    (
        lambda: rollout_advantages(["1", "0"], [0, 0], "rloo"),
        lambda: rollout_advantages([1, 0], [0, 0], "rloo"),
        TypeError,
        "rewards must hold real numbers",
    ),
    (
        lambda: rollout_advantages([1.0, np.nan], [0, 0], "rloo"),
        lambda: rollout_advantages([1, 0], [0, 0], "rloo"),
        ValueError,
        "rewards must be finite",
    ),
    (
        lambda: rollout_advantages([1, 0], [0.5, 0.5], "rloo"),
        lambda: rollout_advantages([1, 0], [0, 0], "rloo"),
        TypeError,
        "prompt_index must hold integers",
    ),
    (
        lambda: zero_variance_fraction([True, False], [0, 0]),
        lambda: zero_variance_fraction([1, 0], [0, 0]),
        TypeError,
        "rewards must hold real numbers, not booleans",
    ),
    (lambda: scaled(["1", "0"], "signed"), lambda: scaled([1.0, 0.0], "signed"), TypeError, "values must hold real"),
    (lambda: success_means([[1, None]], "binary"), lambda: success_means([[1, 0]], "binary"), TypeError, "groups[0]"),
    (
        lambda: kl_penalty(torch.ones(2), "k3", -1.0),
        lambda: kl_penalty(torch.ones(2), "k3", 1.0),
        ValueError,
        "tau must be >= 0 or None",
    ),
    (
        lambda: kl_penalty(torch.ones(2), "k3", "1"),
        lambda: kl_penalty(torch.ones(2), "k3", None),
        TypeError,
        "tau must be a real number",
    ),
]


@pytest.mark.parametrize("bad, good, error, words", CASES, ids=[c[3] for c in CASES])
def test_a_bad_argument_is_refused_by_name_and_the_good_one_is_not(bad, good, error, words):
    with pytest.raises(error) as info:
        bad()
    assert words in str(info.value)
    result = good()
    if isinstance(result, dict):  # summarise
        result = list(result.values())
    if isinstance(result, torch.Tensor):
        result = result.numpy()
    values = np.atleast_1d(getattr(result, "pvalue", result)).astype(float)
    assert np.all(np.isfinite(values))


def _reward_of(value):
    return lambda prompts, completions, answers: [value]


@pytest.mark.parametrize(
    "value, words",
    [(True, r"not booleans \(return float\(correct\)\)"), ("1", "not text"), (float("nan"), "must be finite")],
    ids=["bool", "text", "nan"],
)
def test_a_reward_function_returning_what_a_reward_cannot_be_is_named(value, words):
    """float() would read True as 1 and "1" as 1.0; a reward function returning them is refused,
    naming the completion (control: the same function returning 1.0 passes)."""
    with pytest.raises(ValueError, match=words) as info:
        checked_rewards(_reward_of(value), ["1+2="], ["3"], ["3"])
    assert "'3'" in str(info.value)
    assert checked_rewards(_reward_of(1.0), ["1+2="], ["3"], ["3"]) == [1.0]
