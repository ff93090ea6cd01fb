"""Per-prompt rollout counts for a step, by a rule of theory.allocation.ALLOCATION_RULES
(uniform, VIP as published or as released, Knapsack RL, inverse accuracy, inverse variance, our
rule on the predictor's posterior).

VIP (§5): the GP predictor (theory.predictor.GPSuccessPredictor, Algorithm 1) gives p_hat for
the step's prompts, a_q = 4 p_hat (1 - p_hat) (theory.allocation.success_variance_weights)
and theory.allocation.allocate solves problem (5) for the advantage's objective
(trainer.advantages.ADVANTAGES: RLOO's (8) for ``rloo``, Dr. GRPO's (6) otherwise). The
baselines of App. C.1 use the same p_hat. The predictor learns from each step's rewards
(binary: 0/1 or +-1) of the prompts that got rollouts. ``predictor`` names it:

- ``gp_binomial`` (the default): the GP with the binomial observation noise of
  GPSuccessPredictor (``observation_noise="binomial"``). The paper's noiseless update
  interpolates the batch exactly, so two near-duplicate prompts with different outcomes can
  swing every other prompt's p_hat to 0 or 1 (tests/test_theory_predictor.py); the noisy
  update averages them (and has the lower MAE in the V9 rows);
- ``gp``: Algorithm 1 as printed (noiseless observations);
- ``gp_released``: Algorithm 1 with the settings of VIP's released trainer
  (theory.predictor.GP_PRESETS["released"]: prior mean -5, so p_hat = 0.007 before a prompt's
  neighbourhood is observed, length scale 0.27 for unit-length embeddings, jitter 1e-4, clip 1e-6);
- ``gp_fitted``: ``gp`` with its latent posterior variance scaled by the factor that best
  predicts each new batch's rewards before the update (``variance_scale="fitted"``); it changes
  only what ``vip_posterior`` reads (V14: 0.986 x uniform's variance against VIP's 1.047 x on
  the same GP);
- ``reward_buffer``: theory.predictor.RewardBufferPredictor, Knapsack RL's estimate (the mean
  of a prompt's last 16 rewards, unclipped, so that exact 0s and 1s reach its fallback);
- ``ridge``: theory.predictor.RidgePredictor (VIP Table 3's "Ridge + allocation" ablation).

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prompt_features import prompt_features
from theory import allocation as alloc
from theory.predictor import GPSuccessPredictor, RewardBufferPredictor, RidgePredictor
from trainer.registry import choose


def _gp(preset, noise=None, **settings):
    def build(features, rng):
        rng = rng if rng is not None else np.random.default_rng(0)
        return GPSuccessPredictor.preset(preset, features, observation_noise=noise, rng=rng, **settings)

    return build


@dataclass(frozen=True)
class Predictor:
    """``build(features, rng)`` makes a predictor of class ``kind``."""

    build: Callable
    kind: type

    @property
    def has_posterior(self) -> bool:
        """Whether it gives E[p (1 - p)] under its posterior (the rules with ``uses_posterior`` need it)."""
        return hasattr(self.kind, "expected_success_variance")


# name -> Predictor: the p_hat of every rule but uniform
PREDICTORS = {
    # Algorithm 1 with binomial observation noise (the default)
    "gp_binomial": Predictor(_gp("paper", "binomial"), GPSuccessPredictor),
    "gp": Predictor(_gp("paper"), GPSuccessPredictor),  # Algorithm 1 as printed (noiseless)
    "gp_released": Predictor(_gp("released"), GPSuccessPredictor),  # as VIP's released trainer sets it up
    # Algorithm 1 with its latent variance scaled to predict each batch's rewards (for vip_posterior)
    "gp_fitted": Predictor(_gp("paper", variance_scale="fitted"), GPSuccessPredictor),
    # Knapsack RL's estimate: the mean of each prompt's last 16 rewards, unclipped
    "reward_buffer": Predictor(lambda features, rng: RewardBufferPredictor(features), RewardBufferPredictor),
    # VIP Table 3's "Ridge + allocation"
    "ridge": Predictor(lambda features, rng: RidgePredictor(features), RidgePredictor),
}


class RolloutAllocator:
    """Counts n_q with sum = budget and lower <= n_q <= upper for each step's prompts, by the
    rule ``mode`` of theory.allocation.ALLOCATION_RULES; ``estimator`` names the objective VIP's
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
        self.rule = choose(alloc.ALLOCATION_RULES, mode, "allocation")
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
        p_hat = self.predictor.predict(indices) if self.predictor is not None else None
        # a rule without p_hat (uniform) reads only the number of prompts
        shown = p_hat if p_hat is not None else np.zeros(len(indices))
        posterior = (
            {"success_variance": self.predictor.expected_success_variance(indices)} if self.rule.uses_posterior else {}
        )
        counts = self.rule.allocate(
            shown, self.budget, self.lower, self.upper, self.estimator, self.method, rng=self.rng, **posterior
        )
        self.seconds = time.perf_counter() - start
        return np.asarray(counts, dtype=np.int64), p_hat

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
