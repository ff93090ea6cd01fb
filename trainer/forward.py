"""How the trainer calls a causal LM's forward pass, the same for sampling (trainer.rollout) and
for the training-time log-prob passes (trainer.logprobs), across transformers versions:
positions under left padding, the vocabulary head on the last positions only, and the name the
KV cache goes by.
"""

from __future__ import annotations

import inspect

import torch


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (0 for the first real token)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _forward_parameters(model) -> frozenset:
    return frozenset(inspect.signature(model.forward).parameters)


def last_logits(model, k: int) -> dict:
    """``logits_to_keep=k`` where the model's forward takes it (transformers >= 4.50): the
    vocabulary projection of only the last ``k`` positions."""
    return {"logits_to_keep": k} if "logits_to_keep" in _forward_parameters(model) else {}


def cache_argument(model) -> str:
    """The name ``forward`` takes the KV cache by: ``cache`` from transformers 5.x (whose
    ``deprecate_kwarg`` maps ``past_key_values`` to it with a warning on every call, and drops
    the old name in 5.40: models/llama/modeling_llama.py of 5.24, ``@deprecate_kwarg(
    "past_key_values", "5.40.0", new_name="cache")``), ``past_key_values`` before."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def returned_cache(out):
    """The KV cache a forward pass returns (``cache`` in transformers 5.x outputs,
    ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
