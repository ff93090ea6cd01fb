"""What one step holds: the rollouts (:class:`RolloutBatch`, as an engine returns them, with the
operations the prompt selection needs) and :class:`Experience`, the step's data that learning
and the step's metrics (trainer.step_records) read. Data only: no forward passes, no metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class RolloutBatch:
    """R rollouts. ``sequences`` (R, P + T) holds each left-padded prompt then its completion;
    ``completion_mask`` (R, T) marks real completion tokens (a prefix of each row, the end of
    sequence token included); ``old_logprobs`` (R, T) are the sampling log-probabilities (0 at
    padding); ``prompt_index[r]`` is the rollout's prompt within the step's batch."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    old_logprobs: torch.Tensor
    prompt_index: list[int]
    completions: list[str]

    @property
    def prompt_length(self) -> int:
        return self.sequences.shape[1] - self.completion_mask.shape[1]

    def __len__(self) -> int:
        return len(self.prompt_index)


def select_groups(batch: RolloutBatch, prompts) -> RolloutBatch:
    """The rollouts of the batch's prompts ``prompts`` (positions in its prompt list), those of
    ``prompts[k]`` renumbered as prompt k, in that order."""
    renumber = {int(q): k for k, q in enumerate(prompts)}
    members = {}
    for r, q in enumerate(batch.prompt_index):
        members.setdefault(q, []).append(r)
    rows = [r for q in renumber for r in members.get(q, [])]
    return RolloutBatch(
        sequences=batch.sequences[rows],
        attention_mask=batch.attention_mask[rows],
        completion_mask=batch.completion_mask[rows],
        old_logprobs=batch.old_logprobs[rows],
        prompt_index=[renumber[batch.prompt_index[r]] for r in rows],
        completions=[batch.completions[r] for r in rows],
    )


def concat_batches(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """One batch of several: prompts left-padded and completions right-padded (``pad_id``,
    masked out) to the widest; each batch's prompts numbered after the previous batches'."""
    prompt_width = max(b.prompt_length for b in batches)
    width = max(b.completion_mask.shape[1] for b in batches)

    def widened(b: RolloutBatch, x: torch.Tensor, value) -> torch.Tensor:
        left = x.new_full((len(b), prompt_width - b.prompt_length), value)
        right = x.new_full((len(b), width - b.completion_mask.shape[1]), value)
        return torch.cat([left, x, right], dim=1)

    offsets = np.cumsum([0] + [max(b.prompt_index) + 1 for b in batches[:-1]])
    return RolloutBatch(
        sequences=torch.cat([widened(b, b.sequences, pad_id) for b in batches]),
        attention_mask=torch.cat([widened(b, b.attention_mask, 0) for b in batches]),
        completion_mask=torch.cat([pad_columns(b.completion_mask, width, False) for b in batches]),
        old_logprobs=torch.cat([pad_columns(b.old_logprobs, width, 0.0) for b in batches]),
        prompt_index=[int(o) + q for o, b in zip(offsets, batches) for q in b.prompt_index],
        completions=[c for b in batches for c in b.completions],
    )


def pad_columns(x: torch.Tensor, width: int, value) -> torch.Tensor:
    """``x`` (R, t) right-padded with ``value`` to (R, width)."""
    return torch.cat([x, x.new_full((x.shape[0], width - x.shape[1]), value)], dim=1)


@dataclass
class Experience:
    """One step's rollouts and what learning from them needs.

    Over the whole step (every rank's rollouts, sorted by prompt): ``indices`` (the step's
    dataset rows), ``counts`` and ``p_hat`` per prompt, ``prompt_index`` (rollout -> prompt),
    ``rewards``, ``lengths``, and, with a KL, ``log_ratio`` (each rollout's sequence log ratio
    l = log pi_old(o|q) - log pi_ref(o|q)) and its clip ``tau``. This rank's slice: ``batch``,
    ``advantages``, ``old`` (the sampling policy's log-probs; None until the update when they
    are the update pass's own, ``Trainer.old_from_update``), ``ref`` (the reference's, with a
    KL), ``float32_old`` (the first micro-batch's ``old`` recomputed in float32 when the step
    computes in bfloat16 on a CPU, trainer.precision) and ``z_norms`` (``log_z_norm``).
    """

    indices: np.ndarray
    counts: np.ndarray
    p_hat: np.ndarray | None
    prompt_index: np.ndarray
    rewards: np.ndarray
    lengths: np.ndarray
    batch: RolloutBatch
    advantages: torch.Tensor
    old: torch.Tensor | None
    ref: torch.Tensor | None
    log_ratio: np.ndarray | None
    tau: float | None
    float32_old: torch.Tensor | None
    z_norms: list[float] | None
