"""The success-rate predictors by name, and the predict -> allocate step of every layer.

:data:`PREDICTORS` is the one table of predictors: the trainer's ``predictor`` option, the V9,
V10 and V14 checks and the RL study all build theirs from it, so a name means one thing
everywhere. Each entry builds the predictor from the prompts' features (and, for the GPs'
median-heuristic bandwidth, a numpy Generator; None draws with ``default_rng(0)``) and says how
it treats the features' scale:

- ``gp``: Algorithm 1 as printed (VIP §5.1: noiseless observations, the median-heuristic
  bandwidth, so any scale of features);
- ``gp_binomial``: ``gp`` with binomial observation noise (GPSuccessPredictor
  ``observation_noise="binomial"``): the noiseless update interpolates the batch, so two
  near-duplicate prompts with different outcomes can swing every other prompt's p_hat to 0 or
  1; the noisy update averages them (the trainer's default);
- ``gp_fitted`` / ``gp_binomial_fitted``: the two with their latent posterior variance scaled by
  the factor that best predicts each new batch's rewards before the update
  (``variance_scale="fitted"``); it changes only what the ``vip_posterior`` rule reads;
- ``gp_released``: the settings of VIP's released trainer (GP_PRESETS["released"]: prior mean
  -5, jitter 1e-4, clip 1e-6) with its fixed length scale 0.27, as the release applies it to
  unit-length all-MiniLM-L6-v2 embeddings; on features of another scale 0.27 is another kernel;
- ``gp_released_rescaled``: the released settings with 0.27 carried over as the same fraction
  of the median pairwise distance (0.27 / MINILM_MEDIAN_DISTANCE = 0.23): on MiniLM embeddings it
  is the release's kernel, on any other features the same relative width. The simulators' worlds
  have features of another scale, so their "released settings" rows use this one;
- ``gp_released_rescaled_wide_clip``: that one with the clip eps = 0.05 of ``gp`` instead of
  1e-6 (the V9/V10 ablation);
- ``reward_buffer``: Knapsack RL's estimate, the mean of a prompt's last 16 rewards, unclipped
  (no features used);
- ``ridge``: VIP Table 3's "Ridge + allocation" (features used as they are).

:func:`allocate_step` is the predict -> allocate step (trainer.allocation.RolloutAllocator,
simulators.predictor's V10 loop, simulators.allocation_peers' V14 arms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from theory.allocation_rules import ALLOCATION_RULES, AllocationRule
from theory.predictor import EPS, GP_PRESETS, GPSuccessPredictor, median_bandwidth
from theory.predictor_baselines import RewardBufferPredictor, RidgePredictor

# Median pairwise Euclidean distance of unit-length all-MiniLM-L6-v2 embeddings of 1,500 generated
# math problems (simulators.math_prompts; measured 1.153-1.154 over seeds 0-2): the scale on which
# the released length scale 0.27 was chosen (VIP's embeddings are MiniLM's too).
MINILM_MEDIAN_DISTANCE = 1.154


@dataclass(frozen=True)
class PredictorEntry:
    """``build(features, rng)`` makes a predictor of class ``kind``; ``scale``: how it treats the
    features' scale (see the module docstring)."""

    build: Callable
    kind: type
    scale: str

    @property
    def has_posterior(self) -> bool:
        """Whether it gives E[p (1 - p)] under its posterior (the rules with ``uses_posterior`` need it)."""
        return hasattr(self.kind, "expected_success_variance")


def _gp(preset: str, **settings) -> Callable:
    def build(features, rng=None):
        return GPSuccessPredictor.preset(preset, features, rng=rng, **settings)

    return build


def released_rescaled(features, rng=None, **overrides) -> GPSuccessPredictor:
    """The GP with the released settings, its length scale 0.27 as the fraction 0.27 /
    MINILM_MEDIAN_DISTANCE of the features' median pairwise distance (measured with
    ``default_rng(0)``, so it is a function of the features alone); ``overrides`` change a setting."""
    ratio = GP_PRESETS["released"]["bandwidth"] / MINILM_MEDIAN_DISTANCE
    bandwidth = ratio * median_bandwidth(features, np.random.default_rng(0))
    return GPSuccessPredictor.preset("released", features, **({"bandwidth": bandwidth} | overrides))


MEDIAN, FIXED, RELATIVE, UNUSED, AS_GIVEN = (
    "median-heuristic bandwidth (any scale)",
    "fixed length scale 0.27 (for unit-length MiniLM embeddings)",
    "0.27 as a fraction of the median distance (any scale)",
    "features not used",
    "features used as given (ridge regression)",
)

PREDICTORS = {  # the trainer's default first
    "gp_binomial": PredictorEntry(_gp("paper", observation_noise="binomial"), GPSuccessPredictor, MEDIAN),
    "gp": PredictorEntry(_gp("paper"), GPSuccessPredictor, MEDIAN),
    "gp_released": PredictorEntry(_gp("released"), GPSuccessPredictor, FIXED),
    "gp_fitted": PredictorEntry(_gp("paper", variance_scale="fitted"), GPSuccessPredictor, MEDIAN),
    "gp_binomial_fitted": PredictorEntry(
        _gp("paper", observation_noise="binomial", variance_scale="fitted"), GPSuccessPredictor, MEDIAN
    ),
    "gp_released_rescaled": PredictorEntry(released_rescaled, GPSuccessPredictor, RELATIVE),
    "gp_released_rescaled_wide_clip": PredictorEntry(
        lambda features, rng=None: released_rescaled(features, eps=EPS), GPSuccessPredictor, RELATIVE
    ),
    "reward_buffer": PredictorEntry(
        lambda features, rng=None: RewardBufferPredictor(features), RewardBufferPredictor, UNUSED
    ),
    "ridge": PredictorEntry(lambda features, rng=None: RidgePredictor(features), RidgePredictor, AS_GIVEN),
}


def allocate_step(
    rule: AllocationRule | str,
    predictor,
    indices,
    budget: int,
    lower: int,
    upper: int,
    estimator: str,
    method: str = "exact",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(counts, p_hat) of one step for the prompts ``indices``: ``predictor.predict`` gives
    p_hat (None: a rule that reads none, uniform), its posterior E[p (1 - p)] goes to a rule that
    uses it, and the rule (theory.allocation_rules.ALLOCATION_RULES) solves for the counts with sum =
    ``budget`` and ``lower`` <= n <= ``upper``; ``rng`` for a rule that draws."""
    rule = ALLOCATION_RULES[rule] if isinstance(rule, str) else rule
    if predictor is None and rule.uses_p_hat:
        raise ValueError("predictor: this allocation rule needs p_hat, so a predictor; got None")
    p_hat = predictor.predict(indices) if predictor is not None else None
    shown = p_hat if p_hat is not None else np.zeros(len(indices))  # uniform reads the prompt count only
    posterior = {"success_variance": predictor.expected_success_variance(indices)} if rule.uses_posterior else {}
    counts = rule.allocate(shown, budget, lower, upper, estimator, method, rng=rng, **posterior)
    return np.asarray(counts, dtype=np.int64), p_hat
