"""The training-time forward passes: log pi(o_t | q, o_<t) of the step's completion tokens by the
policy (old log-probs, the PPO epochs' micro-batches), by the reference (the KL), in float32 (the
bfloat16 check, trainer.precision) and the per-rollout gradient norms VIP's analysis is about.
Sampling is trainer.rollout's; both call the model as trainer.forward says.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainer.experience import RolloutBatch
from trainer.forward import cache_argument, last_logits, position_ids, returned_cache
from trainer.models import activation_checkpointing_enabled

# The largest attention-score tensor (rows x heads x length^2, float32) a CPU pass with gradients
# computes on SDPA's math path; longer sequences keep the flash kernel, which never forms it.
MATH_ATTENTION_BYTES = 2**28


def attention_backend(model, seq: torch.Tensor):
    """SDPA's math path (matrix products and a softmax, differentiated by autograd) for a CPU
    pass with gradients whose scores fit :data:`MATH_ATTENTION_BYTES`; the default choice
    otherwise, and always under activation checkpointing, whose recomputation in the backward
    pass runs outside this context and must save the tensors the forward saved. torch's CPU
    flash-attention backward runs 8x its forward on SmolLM2's short training sequences (13 ms
    against 1.5 ms per layer at 32 rollouts x 46 tokens); the math path took a 16 x 8 forward +
    backward from 7.2-7.8 s to 6.2-6.3 s in one run (``python -m benchmarks.step_cpu`` prints
    the step)."""
    heads = getattr(model.config, "num_attention_heads", 1)
    scores = seq.shape[0] * heads * seq.shape[1] ** 2 * 4
    short = scores <= MATH_ATTENTION_BYTES
    if seq.device.type == "cpu" and torch.is_grad_enabled() and short and not activation_checkpointing_enabled(model):
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def completion_logprobs(model, batch: RolloutBatch, temperature: float, rows=None, share_prompts: bool = True):
    """log pi(o_t | q, o_<t) of the completion tokens (R, T) at ``temperature``; 0 at padding.
    ``rows`` selects rollouts (a micro-batch).

    With ``share_prompts`` (and a model that returns a KV cache), each distinct prompt among the
    rows runs through the model once and its keys and values are indexed out to its rollouts,
    whose completions then run on top of them: the same log-probabilities as one pass over every
    full sequence, and, with gradients, the same gradient (indexing and concatenating the cache
    are differentiable), at the cost of the prompt once per prompt rather than once per rollout.
    Without it (activation checkpointing turns the cache off), one pass over the full sequences.
    The vocabulary head runs only where a completion token is predicted (``logits_to_keep``);
    attention takes the path :func:`attention_backend` chooses.
    """
    device = batch.sequences.device  # the loop's micro-batch rows are on it (torch.randperm on the device)
    index = torch.arange(len(batch), device=device)[rows if rows is not None else slice(None)]
    seq, att = batch.sequences[index], batch.attention_mask[index]
    width = batch.completion_mask.shape[1]
    owners = torch.as_tensor(batch.prompt_index, device=device)[index]
    distinct, rollout_of = torch.unique(owners, return_inverse=True)
    with attention_backend(model, seq):
        if share_prompts and len(distinct) < len(index):
            logits = _logits_on_shared_prompts(model, seq, att, width, rollout_of)
        else:
            logits = model(
                input_ids=seq, attention_mask=att, position_ids=position_ids(att), **last_logits(model, width + 1)
            ).logits[:, -width - 1 : -1]
    taken = logits.gather(-1, seq[:, -width:, None]).squeeze(-1).float() / temperature
    # log-normaliser row by row: a float32 copy of all (rows, T, vocab) logits would double the
    # peak memory of long completions with large vocabularies
    log_z = torch.stack([torch.logsumexp(row.float() / temperature, dim=-1) for row in logits])
    return (taken - log_z) * batch.completion_mask[index]


def _logits_on_shared_prompts(model, seq, att, width: int, rollout_of: torch.Tensor) -> torch.Tensor:
    """The (R, T, vocab) logits that predict the completion tokens, each distinct prompt run
    once (``rollout_of[r]``: rollout r's prompt among the distinct ones)."""
    prompt_length = seq.shape[1] - width
    first = torch.stack([torch.nonzero(rollout_of == k)[0, 0] for k in range(int(rollout_of.max()) + 1)])
    prompt_att = att[first, :prompt_length]
    prompt = model(
        input_ids=seq[first, :prompt_length],
        attention_mask=prompt_att,
        position_ids=position_ids(prompt_att),
        use_cache=True,
        **last_logits(model, 1),
    )
    last_prompt_logits = prompt.logits[:, -1:][rollout_of]
    if width == 1:
        return last_prompt_logits
    cache = returned_cache(prompt)
    cache.batch_select_indices(rollout_of)
    pos = position_ids(att)[:, prompt_length:]
    rest = model(
        input_ids=seq[:, prompt_length:-1],
        attention_mask=att[:, :-1],
        position_ids=pos[:, :-1],
        use_cache=True,
        **{cache_argument(model): cache},
    )
    return torch.cat([last_prompt_logits, rest.logits], dim=1)


def logprobs_in_micro_batches(
    model, batch: RolloutBatch, temperature: float, micro_batch_size: int, share_prompts: bool
):
    """Completion log-probs (R, T) of every rollout by ``model``, ``micro_batch_size`` rollouts
    at a time, without gradient, in float32."""
    with torch.no_grad():
        parts = [
            completion_logprobs(model, batch, temperature, slice(i, i + micro_batch_size), share_prompts)
            for i in range(0, len(batch), micro_batch_size)
        ]
    return torch.cat(parts).float()


def float32_logprobs(model, batch: RolloutBatch, temperature: float, rows, share_prompts: bool) -> torch.Tensor:
    """The completion log-probs of the rollouts ``rows`` with autocast off: the float32 reference
    that the bfloat16 log-prob gap is measured against (trainer.precision.logprob_gap)."""
    with torch.no_grad(), torch.autocast(device_type=batch.sequences.device.type, enabled=False):
        return completion_logprobs(model, batch, temperature, rows, share_prompts)


def gradient_norms(model, batch: RolloutBatch, temperature: float, share_prompts: bool) -> list[float]:
    """||H(o)||_2 per rollout: the norm of the gradient of the token-averaged log-likelihood
    (VIP §4). One backward pass per rollout."""
    norms = []
    params = [p for p in model.parameters() if p.requires_grad]
    for r in range(len(batch)):
        logp = completion_logprobs(model, batch, temperature, slice(r, r + 1), share_prompts)
        mean = logp.sum() / batch.completion_mask[r].sum()
        grads = torch.autograd.grad(mean, params, allow_unused=True)
        norms.append(float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))))
    return norms
