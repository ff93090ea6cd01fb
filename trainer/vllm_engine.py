"""vLLM rollouts (the ``gpu`` extra): a ``vllm.LLM`` colocated in each training process.

- Counts per prompt: one request per prompt with ``SamplingParams(n=counts[q])``; prompts with
  n = 0 send nothing. Each request's ``seed`` is drawn from the torch Generator passed in, so
  a seeded run replays its samples.
- Weights: before each step's generation (so after the previous step's optimizer updates),
  :meth:`VLLMEngine.sync_weights` streams the policy's parameters (gathered from FSDP2 shards
  one at a time, ``full_tensor``) into vLLM's model with ``load_weights`` and resets the
  prefix cache.
- Memory: with ``sleep`` vLLM sleeps (level 2: weights and KV cache released) while the
  trainer trains, wakes its weights for the sync and its KV cache for generation.
- Old log-probs: vLLM reports the sampled tokens' log-probs (after temperature), but its
  kernels (bf16, paged attention, another reduction order) do not reproduce the trainer's
  forward pass bit for bit, and CTPO's cumulative ratio multiplies the per-token gaps along
  the sequence. So the trainer recomputes old log-probs with the policy
  (``recompute_old_logprobs`` must stay on) and logs the largest gap as ``logprob_mismatch``.

The API used (``LLM(..., enable_sleep_mode, distributed_executor_backend="external_launcher",
logprobs_mode="processed_logprobs")``, ``sleep``/``wake_up(tags=...)``, the driver worker's
``model.load_weights``, ``reset_prefix_cache``) is that of vLLM 0.22-0.31, the range the ``gpu``
extra pins (TRL 1.16 drives the same calls over that range). Not run here: the project's
machines have no GPU; tests/test_trainer_vllm.py checks this module against a stand-in.
"""

from __future__ import annotations

import os

import torch

from trainer.rollout import RolloutBatch, Sampling


def make_llm(model: str, seed: int, gpu_memory_utilization: float, max_model_len: int | None, sleep: bool):
    """A colocated ``vllm.LLM`` for this process (one per rank, tensor parallel size 1)."""
    try:
        from vllm import LLM
    except ImportError as exc:
        raise ImportError('rollout_engine=vllm needs the gpu extra: pip install -e ".[gpu]"') from exc
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "localhost"), ("MASTER_PORT", "29517")):
        os.environ.setdefault(name, value)  # the external launcher reads torchrun's variables; one process outside torchrun
    return LLM(
        model=model,
        seed=seed,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        enable_sleep_mode=sleep,
        distributed_executor_backend="external_launcher",  # join torchrun's processes, one engine per rank
        logprobs_mode="processed_logprobs",  # log-probs after temperature, like the trainer's
    )


def colocated_engine(config, tokenizer, device, rank: int = 0) -> "VLLMEngine":
    """The engine a config asks for with ``rollout_engine: vllm`` (one per process)."""
    llm = make_llm(config.model, config.seed + rank, config.vllm_gpu_memory_utilization, config.vllm_max_model_len, config.vllm_sleep)
    return VLLMEngine(llm, tokenizer, device, config.vllm_sleep)


def sampling_params(n: int, sampling: Sampling, seed: int):
    from vllm import SamplingParams

    return SamplingParams(n=n, temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, logprobs=0, seed=seed)


class VLLMEngine:
    """``generate(prompts, counts, sampling, generator)`` on a colocated vLLM engine."""

    def __init__(self, llm, tokenizer, device, sleep: bool = True, params=sampling_params):
        """``params(n, sampling, seed)`` builds a request's sampling parameters (vLLM's
        SamplingParams by default)."""
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer must define eos_token and pad_token")
        self.llm, self.tokenizer, self.device, self.sleep, self.params = llm, tokenizer, torch.device(device), sleep, params
        if sleep:
            self.llm.sleep(level=2)

    def sync_weights(self, policy) -> None:
        """Copy the policy's weights into vLLM (collective under FSDP2: every rank calls it)."""
        if self.sleep:
            self.llm.wake_up(tags=["weights"])
        model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, param in policy.state_dict().items():
            full = param.full_tensor() if hasattr(param, "full_tensor") else param
            model.load_weights([(name, full.detach())])
        self.llm.reset_prefix_cache()
        if self.sleep:
            self.llm.sleep(level=2)

    @torch.no_grad()
    def generate(self, prompts, counts, sampling: Sampling, generator: torch.Generator) -> RolloutBatch:
        counts = [int(c) for c in counts]
        if len(counts) != len(prompts) or any(c < 0 for c in counts) or sum(counts) == 0:
            raise ValueError(f"counts must hold one non-negative integer per prompt ({len(prompts)}) and allocate at least one rollout; got {counts}")
        wanted = [q for q, c in enumerate(counts) if c > 0]
        ids = [self.tokenizer(prompts[q], add_special_tokens=False)["input_ids"] for q in wanted]
        seeds = torch.randint(0, 2**31 - 1, (len(wanted),), generator=generator, device=generator.device).tolist()
        requests = [{"prompt_token_ids": p} for p in ids]
        params = [self.params(counts[q], sampling, seed) for q, seed in zip(wanted, seeds)]
        if self.sleep:
            self.llm.wake_up(tags=["kv_cache"])
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        if self.sleep:
            self.llm.sleep(level=2)
        rows = [(q, p, out) for q, p, request in zip(wanted, ids, outputs) for out in request.outputs]
        return self._batch(rows)

    def _batch(self, rows) -> RolloutBatch:
        """Left-padded prompts, right-padded completions (see RolloutBatch)."""
        pad = self.tokenizer.pad_token_id
        width_p = max(len(p) for _, p, _ in rows)
        width_c = max(len(o.token_ids) for _, _, o in rows)
        seq, att, mask, logps = [], [], [], []
        for _, p, out in rows:
            c = list(out.token_ids)
            seq.append([pad] * (width_p - len(p)) + list(p) + c + [pad] * (width_c - len(c)))
            att.append([0] * (width_p - len(p)) + [1] * (len(p) + len(c)) + [0] * (width_c - len(c)))
            mask.append([True] * len(c) + [False] * (width_c - len(c)))
            sampled = [step[token].logprob for step, token in zip(out.logprobs, c)]
            logps.append(sampled + [0.0] * (width_c - len(c)))
        completions = [self.tokenizer.decode(o.token_ids, skip_special_tokens=True) for _, _, o in rows]
        return RolloutBatch(
            sequences=torch.tensor(seq, device=self.device),
            attention_mask=torch.tensor(att, device=self.device),
            completion_mask=torch.tensor(mask, device=self.device),
            old_logprobs=torch.tensor(logps, dtype=torch.float32, device=self.device),
            prompt_index=[q for q, _, _ in rows],
            completions=completions,
        )
