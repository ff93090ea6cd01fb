"""Group advantages over groups of unequal size (VIP gives each prompt its own n).

:data:`ADVANTAGES` is the table of estimators: each names its formula, all theory.variance's
(``dr_grpo``: R - mean R and ``rloo``: R - the mean of the n - 1 others, by
``group_advantages``; ``grpo``: (R - mean R) / (std R + eps), by ``standardised_advantages``),
and the objective VIP's allocation minimises for it. Groups of one size are computed together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from theory import checks
from theory.variance import group_advantages, standardised_advantages
from trainer.registry import choose


@dataclass(frozen=True)
class AdvantageEstimator:
    """``advantages(rewards)`` over groups along the last axis; ``allocation_objective``: the
    estimator whose gradient variance VIP's allocation minimises (problem (6) or (8))."""

    advantages: Callable[[np.ndarray], np.ndarray]
    allocation_objective: str


ADVANTAGES = {
    # GRPO's standardised advantage has no closed-form variance; Dr. GRPO's (6) is the nearest
    "grpo": AdvantageEstimator(standardised_advantages, "dr_grpo"),
    "dr_grpo": AdvantageEstimator(partial(group_advantages, estimator="dr_grpo"), "dr_grpo"),
    "rloo": AdvantageEstimator(partial(group_advantages, estimator="rloo"), "rloo"),
}


def rollout_advantages(rewards, prompt_index, name: str) -> np.ndarray:
    """One advantage per rollout by the estimator ``name``; ``prompt_index[r]`` names rollout
    r's group."""
    rewards, prompt_index = _rollouts(rewards, prompt_index)
    estimator = choose(ADVANTAGES, name, "advantage").advantages
    groups = [np.flatnonzero(prompt_index == q) for q in np.unique(prompt_index)]
    out = np.empty_like(rewards)
    for size in sorted({g.size for g in groups}):
        members = np.stack([g for g in groups if g.size == size])  # (groups of this size, size)
        out[members] = estimator(rewards[members])
    return out


def zero_variance_fraction(rewards, prompt_index) -> float:
    """The fraction of groups whose rewards are all equal (they carry no gradient)."""
    rewards, prompt_index = _rollouts(rewards, prompt_index)
    groups = [rewards[prompt_index == q] for q in np.unique(prompt_index)]
    return float(np.mean([np.ptp(g) == 0 for g in groups]))


def _rollouts(rewards, prompt_index) -> tuple[np.ndarray, np.ndarray]:
    """Finite real rewards and integer group ids, 1-D and of one length."""
    rewards, prompt_index = checks.as_float_array("rewards", rewards), np.asarray(prompt_index)
    if rewards.shape != prompt_index.shape or rewards.ndim != 1 or rewards.size == 0:
        raise ValueError(
            "rewards and prompt_index must be 1-D, non-empty and of one length;"
            f" got shapes {rewards.shape} and {prompt_index.shape}"
        )
    if prompt_index.dtype.kind not in "iu":
        raise TypeError(f"prompt_index must hold integers (one group id per rollout); got dtype {prompt_index.dtype}")
    return rewards, prompt_index
