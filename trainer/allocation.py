"""Per-prompt rollout counts for a step, by a rule of theory.allocation_rules.ALLOCATION_RULES
(uniform, VIP as published or as released, Knapsack RL, inverse accuracy, inverse variance, our
rule on the predictor's posterior).

VIP (§5): the GP predictor (theory.predictor.GPSuccessPredictor, Algorithm 1) gives p_hat for
the step's prompts, a_q = 4 p_hat (1 - p_hat) (theory.allocation.success_variance_weights)
and theory.allocation.allocate solves problem (5) for the advantage's objective
(trainer.advantages.ADVANTAGES: RLOO's (8) for ``rloo``, Dr. GRPO's (6) otherwise). The
baselines of App. C.1 use the same p_hat. The predictor learns from each step's rewards
(binary: 0/1 or +-1) of the prompts that got rollouts. ``predictor`` names an entry of
theory.predictors.PREDICTORS (``gp_binomial`` by default), the table the claim checks build
theirs from too; the step itself is theory.predictors.allocate_step.

Every rule other than uniform uses the predictor's p_hat; ``vip_posterior`` (ours) also its
posterior E[p (1 - p)] (GPSuccessPredictor.expected_success_variance), which the GPs have and
ridge has not (trainer.config refuses that pair). :meth:`RolloutAllocator.metrics`
reports the GP's conditioning (theory.predictor.AMPLIFICATION_LIMIT) for the step's metrics.

Features for the GP: prompt_features.prompt_features, by ``embedding``: sentence-transformers
embeddings (VIP §6: all-MiniLM-L6-v2, the ``embed`` extra) for ``sentence_transformers``, a
hashed bag of words for ``hashed``, and for ``auto`` the first when installed, else the second.
"""

from __future__ import annotations

import time

import numpy as np

from prompt_features import prompt_features
from theory import allocation_rules
from theory.predictors import PREDICTORS, allocate_step
from trainer.registry import choose


class RolloutAllocator:
    """Counts n_q with sum = budget and lower <= n_q <= upper for each step's prompts, by the
    rule ``mode`` of theory.allocation_rules.ALLOCATION_RULES; ``estimator`` names the objective VIP's
    rules minimise (``rloo`` or ``dr_grpo``)."""

    def __init__(
        self,
        mode,
        texts,
        budget,
        lower,
        upper,
        estimator,
        method="exact",
        embedding="auto",
        rng=None,
        predictor="gp_binomial",
    ):
        self.rule = choose(allocation_rules.ALLOCATION_RULES, mode, "allocation")
        build = choose(PREDICTORS, predictor, "predictor").build
        self.budget, self.lower, self.upper, self.method = int(budget), int(lower), int(upper), method
        self.estimator, self.rng = estimator, rng  # rng: for the rules that draw (saved with the run)
        self.predictor, self.features = None, None
        if self.rule.uses_p_hat:
            features, self.features = prompt_features(list(texts), embedding)
            self.predictor = build(features, rng)
        self.seconds = 0.0  # time spent predicting, allocating and updating in the last step

    def allocate(self, indices) -> tuple[np.ndarray, np.ndarray | None]:
        """(counts, p_hat) for the prompts ``indices``; p_hat is None for a rule without one."""
        start = time.perf_counter()
        counts, p_hat = allocate_step(
            self.rule,
            self.predictor,
            indices,
            self.budget,
            self.lower,
            self.upper,
            self.estimator,
            self.method,
            self.rng,
        )
        self.seconds = time.perf_counter() - start
        return counts, p_hat

    def observe(self, indices, rewards) -> None:
        """Algorithm 1's update with the step's rewards (one array per prompt)."""
        if self.predictor is not None:
            start = time.perf_counter()
            self.predictor.update(indices, rewards)
            self.seconds += time.perf_counter() - start

    def metrics(self) -> dict:
        """The GP's last condition number and amplification and its count of ill-conditioned
        updates so far (theory.predictor.GPSuccessPredictor); empty before the first update and
        without a GP."""
        if getattr(self.predictor, "condition_number", None) is None:
            return {}
        names = ("condition_number", "amplification", "ill_conditioned_fits")
        return {f"predictor/{name}": getattr(self.predictor, name) for name in names}

    def state_dict(self) -> dict:
        return {} if self.predictor is None else self.predictor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.predictor is not None:
            self.predictor.load_state_dict(state)
