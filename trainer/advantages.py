"""Group advantages over groups of unequal size (VIP gives each prompt its own n).

Every formula is theory.variance's: ``dr_grpo`` (R - mean R) and ``rloo`` (R - the mean of the
n - 1 others) by ``group_advantages``, ``grpo`` ((R - mean R) / (std R + eps)) by
``standardised_advantages``. Groups of one size are computed together.
"""

from __future__ import annotations

import numpy as np

from theory.variance import group_advantages, standardised_advantages


def rollout_advantages(rewards, prompt_index, name: str) -> np.ndarray:
    """One advantage per rollout; ``prompt_index[r]`` names rollout r's group."""
    rewards = np.asarray(rewards, dtype=float)
    prompt_index = np.asarray(prompt_index)
    if rewards.shape != prompt_index.shape or rewards.ndim != 1:
        raise ValueError(f"rewards and prompt_index must be 1-D of one length; got {rewards.shape} and {prompt_index.shape}")
    groups = [np.flatnonzero(prompt_index == q) for q in np.unique(prompt_index)]
    out = np.empty_like(rewards)
    for size in sorted({g.size for g in groups}):
        members = np.stack([g for g in groups if g.size == size])  # (groups of this size, size)
        values = rewards[members]
        out[members] = standardised_advantages(values) if name == "grpo" else group_advantages(values, name)
    return out


def zero_variance_fraction(rewards, prompt_index) -> float:
    """The fraction of groups whose rewards are all equal (they carry no gradient)."""
    rewards, prompt_index = np.asarray(rewards, dtype=float), np.asarray(prompt_index)
    groups = [rewards[prompt_index == q] for q in np.unique(prompt_index)]
    return float(np.mean([np.ptp(g) == 0 for g in groups]))
