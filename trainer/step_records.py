"""A step's records: its row of metrics.jsonl and its rows of rollouts.jsonl.

:func:`step_metrics` is the one place a step's metrics are gathered: from the step's data
(trainer.experience.Experience), the figures learning reports (loss, gradient norm, clip
fractions, entropy, learning rate), the timers, and the allocator's and the prompt selection's
own metrics.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.advantages import zero_variance_fraction
from trainer.experience import Experience
from trainer.losses import kl_penalty
from trainer.precision import logprob_gap


def kl_metrics(log_ratio: np.ndarray, tau: float | None) -> dict:
    """The KL of the sampling policy to the reference over the step's rollouts: Schulman's k3
    of the sequence log ratios l, mean |l|, and the fraction |l| > tau clips (RLHF-gen §6.1)."""
    everyone = torch.as_tensor(log_ratio)
    return {
        "kl/k3": float(kl_penalty(everyone, "k3", None).mean()),
        "kl/log_ratio_abs_mean": float(everyone.abs().mean()),
        "kl/clip_fraction": 0.0 if tau is None else float((everyone.abs() > tau).float().mean()),
    }


def step_metrics(step: int, exp: Experience, update: dict, seconds: dict, allocator, selector=None) -> dict:
    """The step's metrics row. ``update``: what learning reported; ``seconds``: the step's timers
    (``total`` among them); ``allocator`` (trainer.allocation.RolloutAllocator) and ``selector``
    (trainer.selection.PromptSelector, or None) add their own."""
    hist = np.bincount(exp.counts)
    metrics = {
        "step": step,
        "reward/mean": float(exp.rewards.mean()),
        "reward/std": float(exp.rewards.std()),
        "zero_variance_groups": zero_variance_fraction(exp.rewards, exp.prompt_index),
        "allocation/histogram": {str(n): int(c) for n, c in enumerate(hist) if c},
        "allocation/min": int(exp.counts.min()),
        "allocation/max": int(exp.counts.max()),
        "response_length/mean": float(exp.lengths.mean()),
        "response_length/max": int(exp.lengths.max()),
    }
    metrics |= update
    if exp.log_ratio is not None:
        metrics |= kl_metrics(exp.log_ratio, exp.tau)
    if exp.float32_old is not None:
        rows = slice(0, exp.float32_old.shape[0])
        metrics |= logprob_gap(exp.old[rows], exp.float32_old, exp.batch.completion_mask[rows])
    metrics |= {f"time/{k}": v for k, v in seconds.items()}
    metrics["time/allocation"] = allocator.seconds
    metrics["time/allocation_fraction"] = allocator.seconds / seconds["total"]
    metrics |= allocator.metrics()
    if selector is not None:
        metrics |= selector.metrics()
    if exp.tau is not None:
        metrics["kl/tau"] = float(exp.tau)
    return metrics


def rollout_rows(step: int, exp: Experience, prompt_ids) -> list[dict]:
    """One row per rollout: its prompt (``prompt_ids[q]``: the dataset row of the step's prompt
    q), its number within the prompt's group, reward, length, the prompt's count and p_hat, and
    its gradient norm with ``log_z_norm``."""
    rows, seen = [], {}
    for r, q in enumerate(exp.prompt_index.tolist()):
        j = seen[q] = seen.get(q, -1) + 1
        row = {
            "step": step,
            "prompt_id": int(prompt_ids[q]),
            "rollout": j,
            "reward": float(exp.rewards[r]),
            "response_length": int(exp.lengths[r]),
            "n_allocated": int(exp.counts[q]),
            "p_hat": None if exp.p_hat is None else float(exp.p_hat[q]),
        }
        if exp.z_norms is not None:
            row["z_norm"] = exp.z_norms[r]
        rows.append(row)
    return rows
