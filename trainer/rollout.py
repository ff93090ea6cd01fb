"""Rollout engines: ``generate(prompts, counts, sampling, generator) -> RolloutBatch``.

``counts[q]`` rollouts of prompt q — different per prompt, which is VIP's point. An engine
returns each completion's token ids and the log-probabilities of the sampled tokens under the
sampling distribution (pi_b, temperature included).

:class:`TransformersEngine` samples with the model's forward pass and its KV cache in our own
loop rather than ``model.generate``: ``generate`` draws from torch's global RNG, and the
trainer's rule is that randomness comes from a ``torch.Generator`` passed in (a resumed run
must replay the same samples); the loop also reads the log-probabilities of the sampled
tokens directly. Sampling is at ``temperature`` over the full vocabulary (VIP and CTPO
sample at 1.0 with no top-p/top-k). The vLLM engine (gpu extra) is trainer.vllm_engine's.

This module is sampling only: the batch types are trainer.experience's, the training-time
log-prob passes trainer.logprobs'.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch

from trainer.experience import RolloutBatch, pad_columns
from trainer.forward import cache_argument, last_logits, position_ids, returned_cache


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    max_new_tokens: int = 256


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], counts, sampling: Sampling, generator: torch.Generator) -> RolloutBatch: ...

    def sync_weights(self, policy) -> None:
        """Make the engine sample from ``policy``'s current weights (called before each step)."""

    def check_prompt_lengths(self, prompts: list[str], max_new_tokens: int, rows=None) -> None:
        """Raise ValueError when a prompt plus ``max_new_tokens`` does not fit the context
        (naming its dataset row from ``rows``, if given)."""

    def generating(self) -> contextlib.AbstractContextManager:
        """A context for several generate calls with no weight change between them (evaluation),
        in which the engine may keep what it would otherwise release after each call."""


def check_context(prompt_lengths, max_new_tokens: int, context: int, what: str, rows=None) -> None:
    """Refuse when the longest prompt (in tokens) plus ``max_new_tokens`` exceeds ``context``,
    naming the prompt (its dataset row when ``rows`` gives them, else its index) and the numbers."""
    if not prompt_lengths:
        return
    longest = max(range(len(prompt_lengths)), key=prompt_lengths.__getitem__)
    need = prompt_lengths[longest] + max_new_tokens
    if need > context:
        name = f"prompt {longest}" if rows is None else f"the prompt of dataset row {rows[longest]}"
        raise ValueError(
            f"{name} has {prompt_lengths[longest]} tokens; "
            f"with max_new_tokens = {max_new_tokens} it needs {need} tokens, "
            f"more than {what} = {context}"
        )


class NonFiniteLogits(FloatingPointError):
    """The model's next-token logits hold a NaN or an infinity (diverged weights, or a
    temperature that overflows them): sampling from them would be meaningless."""


def _sampling_logp(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log-softmax of ``logits / temperature``; NonFiniteLogits where a logit is not finite, as
    there is then no distribution to sample from."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    if not bool(torch.isfinite(logits).all()) or bool(torch.isnan(logp).any()):
        raise NonFiniteLogits(f"the next-token logits at temperature {temperature} are not finite")
    return logp


def draw_tokens(logp: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of the log-probabilities ``logp`` (R, V), drawn by inverting the row's
    cumulative distribution at one uniform from ``generator``: row r takes the first token whose
    cumulative probability exceeds u_r times the row's total.

    Written by hand because ``torch.multinomial`` draws a single sample on the CPU as the argmax
    of p / E over V exponentials (an exponential race): V random numbers per row where this uses
    one; at 128 rows x 49,152 tokens 142 ms against 9 ms (``python -m benchmarks.step_cpu``),
    2 s of SmolLM2's 16-token generation. The sums run in
    float64, so a token's share of [0, total) is its probability to ~1e-16; a token of
    probability zero has an empty share and is never drawn, and u_r * total is kept below the
    total, so the last token with positive probability closes the row."""
    cdf = logp.exp().cumsum(-1, dtype=torch.float64)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, dtype=torch.float64, device=logp.device)
    x = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, x, right=True).squeeze(-1)


def sample_tokens(
    model,
    ids: torch.Tensor,
    att: torch.Tensor,
    sampling: Sampling,
    generator: torch.Generator,
    pad_id: int,
    eos_id: int,
    rollouts=None,
    all_done=lambda flag: flag,
):
    """Sample completions of the left-padded prompts ``ids`` (P, L) with the model's KV cache.

    ``rollouts[r]`` is the prompt row that rollout r continues (default: one rollout per
    row). Each prompt is run through the model once and its cache is copied to its rollouts
    (``batch_select_indices``), so a prompt with n rollouts costs one prefill rather than n.
    Returns tokens (R, t), their log-probabilities at ``sampling.temperature`` and the
    completion mask (R, t), t <= max_new_tokens; the draws consume ``generator`` row by row in
    rollout order, whichever prompts share a prefill.
    """
    cache_name = cache_argument(model)
    rows = torch.arange(ids.shape[0], device=ids.device) if rollouts is None else torch.as_tensor(rollouts)
    rows = rows.to(ids.device)
    out = model(
        input_ids=ids, attention_mask=att, position_ids=position_ids(att), use_cache=True, **last_logits(model, 1)
    )
    cache = returned_cache(out)
    if rollouts is not None:
        cache.batch_select_indices(rows)
    att, logits = att[rows], out.logits[:, -1][rows]
    pos = position_ids(att)[:, -1:]
    done = torch.zeros(len(rows), dtype=torch.bool, device=ids.device)
    tokens, logps, masks = [], [], []
    for _ in range(sampling.max_new_tokens):
        logp = _sampling_logp(logits, sampling.temperature)
        tok = draw_tokens(logp, generator)
        tok = torch.where(done, pad_id, tok)
        tokens.append(tok)
        logps.append(logp.gather(-1, tok[:, None]).squeeze(-1))
        masks.append(~done)
        done = done | (tok == eos_id)
        if all_done(bool(done.all())):
            break
        att = torch.cat([att, att.new_ones(att.shape[0], 1)], dim=1)  # finished rows' padding is masked out later
        pos = pos + 1
        out = model(input_ids=tok[:, None], attention_mask=att, position_ids=pos, use_cache=True, **{cache_name: cache})
        cache, logits = returned_cache(out), out.logits[:, -1]
    return torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(masks, 1)


class TransformersEngine:
    """Sampling with a ``transformers`` causal LM (CPU or one GPU).

    Rollouts are sampled in chunks of ``batch_size``; within a chunk each prompt is prefilled
    once and its KV cache shared by its rollouts (:func:`sample_tokens`).
    ``share_prompt_cache=False`` prefills every rollout's prompt on its own: the same draws from
    the same generator (the benchmark's and the tests' reference).
    """

    def __init__(self, model, tokenizer, batch_size: int = 64, all_done=None, share_prompt_cache: bool = True):
        """``all_done(flag)`` tells whether every process has finished its chunk (FSDP needs every
        rank to run the same forward passes); by default this process alone decides."""
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError(
                "the tokenizer must define eos_token and pad_token (set pad_token = eos_token if it has none)"
            )
        self.model, self.tokenizer, self.batch_size = model, tokenizer, int(batch_size)
        self.all_done = all_done or (lambda flag: flag)
        self.share_prompt_cache = share_prompt_cache

    def sync_weights(self, policy) -> None:
        """Nothing to do: this engine samples with the policy itself."""

    def generating(self):
        """Several generate calls in a row (evaluation): nothing to hold for this engine."""
        return contextlib.nullcontext(self)

    def check_prompt_lengths(self, prompts, max_new_tokens: int, rows=None) -> None:
        """Refuse prompts that leave no room for ``max_new_tokens`` in the model's context
        (``max_position_embeddings``): past it the positions have no embedding."""
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        check_context(
            lengths,
            max_new_tokens,
            self.model.config.max_position_embeddings,
            "the model's context (max_position_embeddings)",
            rows,
        )

    @torch.no_grad()
    def generate(self, prompts, counts, sampling: Sampling, generator: torch.Generator) -> RolloutBatch:
        counts = [int(c) for c in counts]
        if len(counts) != len(prompts) or any(c < 0 for c in counts):
            raise ValueError(f"counts must hold one non-negative integer per prompt ({len(prompts)}); got {counts}")
        index = [q for q, c in enumerate(counts) for _ in range(c)]
        if not index:
            raise ValueError("counts must allocate at least one rollout")
        device = next(self.model.parameters()).device
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        prompt_ids, prompt_att = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        chunks = [
            self._chunk(prompt_ids, prompt_att, index[i : i + self.batch_size], sampling, generator)
            for i in range(0, len(index), self.batch_size)
        ]
        width = max(c[0].shape[1] for c in chunks)
        tokens = torch.cat([pad_columns(c[0], width, self.tokenizer.pad_token_id) for c in chunks])
        logps = torch.cat([pad_columns(c[1], width, 0.0) for c in chunks])
        mask = torch.cat([pad_columns(c[2], width, False) for c in chunks])
        completions = self.tokenizer.batch_decode(
            torch.where(mask, tokens, self.tokenizer.pad_token_id), skip_special_tokens=True
        )
        return RolloutBatch(
            sequences=torch.cat([prompt_ids[index], tokens], dim=1),
            attention_mask=torch.cat([prompt_att[index], mask.long()], dim=1),
            completion_mask=mask,
            old_logprobs=logps * mask,
            prompt_index=index,
            completions=completions,
        )

    def _chunk(self, prompt_ids, prompt_att, index: list[int], sampling: Sampling, generator):
        """Tokens, log-probs and mask of the rollouts ``index`` (their prompts' rows)."""
        if self.share_prompt_cache:
            rows = sorted(set(index))
            rollouts = [rows.index(q) for q in index]
        else:
            rows, rollouts = index, None
        ids, att = _trim_padding(prompt_ids[rows], prompt_att[rows])
        tok = self.tokenizer
        return sample_tokens(
            self.model, ids, att, sampling, generator, tok.pad_token_id, tok.eos_token_id, rollouts, self.all_done
        )


def _trim_padding(ids: torch.Tensor, att: torch.Tensor):
    """Drop the left-padding columns that every row of the chunk has."""
    first = int((att.sum(0) > 0).float().argmax()) if att.any() else 0
    return ids[:, first:], att[:, first:]
