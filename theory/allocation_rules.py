"""The allocation rules a run can pick: one table, :data:`ALLOCATION_RULES`, read by the trainer
(``allocation``), the claim checks and the RL study. Each rule's mathematics is in its own module:
:mod:`theory.allocation` (VIP's problem (5) and App. C.1's baselines),
:mod:`theory.allocation_released` (VIP's released code), :mod:`theory.allocation_knapsack`
(Knapsack RL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theory import checks
from theory.allocation import (
    BASELINE_MIN_LOWER,
    allocate,
    inverse_accuracy_allocation,
    inverse_variance_allocation,
    posterior_success_variance_weights,
    success_variance_weights,
    uniform_allocation,
)
from theory.allocation_knapsack import KNAPSACK_MIN_N, knapsack_allocation
from theory.allocation_released import RELEASED_DECIMALS, released_vip_allocation


@dataclass(frozen=True)
class AllocationRule:
    """A per-prompt allocation rule: ``allocate(p_hat, budget, lower, upper, estimator,
    method, rng, success_variance)`` -> integer counts; ``rng`` is a numpy Generator for the
    rules that draw; ``success_variance`` the predictor's posterior E[p (1 - p)] per prompt
    (None for a predictor without a posterior).
    ``uses_p_hat``: the rule needs predicted success rates (a predictor, binary rewards);
    ``min_lower``: the smallest L it is defined for; ``label``: its name in the claim checks'
    rows and figures; ``uses_posterior``: the rule needs ``success_variance`` (a predictor
    with a posterior)."""

    allocate: Callable[..., np.ndarray]
    uses_p_hat: bool
    min_lower: int
    label: str
    summary: str
    uses_posterior: bool = False


def _uniform_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    return uniform_allocation(len(p_hat), budget, lower, upper)


def _vip_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    return allocate(success_variance_weights(p_hat), budget, lower, upper, estimator, method)


def _vip_posterior_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    """Ours, not a paper's: problem (5) with a_q = 4 E[p_q (1 - p_q)] under the predictor's posterior.

    Why these weights. For +-1 rewards Var(G_q) = 4 sigma_Z^2 p_q (1 - p_q) g(n_q) with
    g(n) = (n - 1)/n^2 (Dr. GRPO, Prop 4.2) or 1/(n - 1) (RLOO, Prop 4.3): linear in
    p_q (1 - p_q) for fixed n_q. The counts are chosen before the rollouts, so given the
    predictor's posterior over p the expected loss of an allocation n is
    E[sum_q Var(G_q)] = sum_q 4 sigma_Z^2 E[p_q (1 - p_q)] g(n_q): the expectation passes inside
    the sum and the Bayes decision (the allocation minimising the posterior expected gradient
    variance) is VIP's problem (5) with the expected weights. VIP's rule (``_vip_rule``) is the
    special case of zero posterior variance, where E[p (1 - p)] = p_hat (1 - p_hat); with
    posterior spread the weights of confident-looking prompts (p_hat near 0 or 1) rise and
    those near 1/2 fall, so the allocation moves toward uniform where the predictor is unsure.
    """
    if success_variance is None:
        raise ValueError(
            "success_variance: the vip_posterior rule allocates on the predictor's posterior E[p (1 - p)] "
            "per prompt (theory.predictor.GPSuccessPredictor.expected_success_variance); got None"
        )
    a = posterior_success_variance_weights(success_variance)
    if a.shape != np.shape(p_hat):
        raise ValueError(
            f"success_variance must hold one value per prompt ({np.shape(p_hat)}, as p_hat); got shape {a.shape}"
        )
    return allocate(a, budget, lower, upper, estimator, method)


def _vip_released_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    return released_vip_allocation(p_hat, budget, lower, upper, estimator)


def _vip_released_slsqp_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    """What VIP's released trainer runs: p_hat rounded to 5 decimals (``np.round(mean_pred, 5)``
    before its call of ``allocate_rollout``), then the released rule with SLSQP."""
    p_hat = np.round(checks.probability("p_hat", p_hat), RELEASED_DECIMALS)
    return released_vip_allocation(p_hat, budget, lower, upper, estimator, solver="slsqp", rng=rng)


def _knapsack_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    return knapsack_allocation(p_hat, budget, lower, upper)


def _inverse_accuracy_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    return inverse_accuracy_allocation(p_hat, budget, lower, upper)


def _inverse_variance_rule(p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None):
    """App. C.1's answer variance sigma^2 of a correct/incorrect answer, p (1 - p): on the scale
    of the accuracy the inverse-accuracy rule uses, with the same eps."""
    p_hat = checks.probability("p_hat", p_hat)
    return inverse_variance_allocation(p_hat * (1.0 - p_hat), budget, lower, upper)


# ``method`` is how VIP's integer problem is solved (:func:`allocate`); the other rules ignore it.
ALLOCATION_RULES = {
    "uniform": AllocationRule(
        _uniform_rule, False, BASELINE_MIN_LOWER, "uniform", "floor(C/B) each, the rest to the first prompts"
    ),
    "vip": AllocationRule(_vip_rule, True, 3, "VIP", "VIP §5.2: minimise problem (5) with a_q = 4 p_hat (1 - p_hat)"),
    "vip_posterior": AllocationRule(
        _vip_posterior_rule,
        True,
        3,
        "VIP (posterior)",
        "ours: problem (5) with a_q = 4 E[p (1 - p)] under the predictor's posterior (Bayes decision)",
        uses_posterior=True,
    ),
    "vip_released": AllocationRule(
        _vip_released_rule,
        True,
        3,
        "released code",
        "VIP's released objective solved exactly (V13): + gamma log(p_hat) n, drops prompts under 4",
    ),
    "vip_released_slsqp": AllocationRule(
        _vip_released_slsqp_rule,
        True,
        3,
        "released code (SLSQP)",
        "VIP's released code run literally (V13): SLSQP with scipy's defaults, float-noise ties, p_hat to 5 dp",
    ),
    "knapsack": AllocationRule(
        _knapsack_rule,
        True,
        KNAPSACK_MIN_N,
        "Knapsack RL",
        "Knapsack RL (arXiv 2509.25849) as released: max sum P(mixed group) p (1-p)^2 over the extra rollouts",
    ),
    "inverse_accuracy": AllocationRule(
        _inverse_accuracy_rule,
        True,
        BASELINE_MIN_LOWER,
        "inverse-accuracy",
        "App. C.1: n_q proportional to 1 - p_hat + eps",
    ),
    "inverse_variance": AllocationRule(
        _inverse_variance_rule,
        True,
        BASELINE_MIN_LOWER,
        "inverse-variance",
        "App. C.1: n_q proportional to 1 / (p_hat (1 - p_hat) + eps)",
    ),
}
