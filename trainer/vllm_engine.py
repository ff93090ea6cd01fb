"""vLLM rollouts (the ``gpu`` extra): a ``vllm.LLM`` colocated in each training process.

- Counts per prompt: one request per prompt with ``SamplingParams(n=counts[q])``; prompts with
  n = 0 send nothing.
- Weights: before each step's generation (so after the previous step's optimizer updates),
  :meth:`VLLMEngine.sync_weights` streams the policy's parameters (gathered from FSDP2 shards
  one at a time, ``full_tensor``) into vLLM's model with ``load_weights`` and resets the
  prefix cache: vLLM keys cached blocks by their tokens alone (0.32
  vllm/v1/core/kv_cache_utils.py:625-663, nothing names the weights) and caches prefixes by
  default, so without the reset a prompt seen before the sync would reuse KV computed with the
  old weights (the engine core resets it itself only when it sleeps, 0.32 core.py:973-974).
  Tied weights are sent once, under the name the policy owns them by.
- Memory (``vllm_sleep``): vLLM sleeps at level 2 while the trainer trains. The engine keeps
  its own record of what sleeps, because vLLM's sleep mode has rules that a naive call order
  breaks (the comments above :meth:`VLLMEngine._wake` cite vLLM's sources). The order, the one
  TRL 1.16 uses over the same range:

  - sync: empty torch's cache, wake ``weights``, load, reset the prefix cache; no sleep after;
  - generate: re-sync first if a sleep discarded the weights, empty torch's cache, wake
    ``kv_cache``, generate, sleep at level 2 (which discards the weights again);
  - inside ``with engine.generating():`` (evaluation: several batches, no training between
    them) the engine stays awake from the first batch to the last and sleeps once at the end,
    so an evaluation makes one sync and one wake-up however many batches it samples.

- Reproducibility: a resumed run restores the weights, the optimizer, the prompt order, the
  allocation and every generator, but vLLM's samples are not replayed. Its kernels are
  batch-dependent (the same request in another batch takes other reduction orders) and
  per-request seeds send requests down a slower per-request sampling path without making
  them batch-invariant, so the engine sets no per-request seed: sampling is seeded once,
  by the engine's ``seed``. The transformers engine does replay a seeded run exactly.
- Old log-probs: vLLM reports the sampled tokens' log-probs (after temperature), but its
  kernels (bf16, paged attention, another reduction order) do not reproduce the trainer's
  forward pass bit for bit, and CTPO's cumulative ratio multiplies the per-token gaps along
  the sequence. So the trainer recomputes old log-probs with the policy
  (``recompute_old_logprobs`` must stay on) and logs the largest gap as ``logprob_mismatch``.

Checked against vLLM's sources (0.22-0.32) and ``tests/vllm_standin.py``, a stand-in that
models those semantics per version; never run on a GPU here (the project's machines have none).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager

import torch

from trainer.distributed import launched_by_torchrun
from trainer.experience import RolloutBatch
from trainer.rollout import Sampling, check_context

TAGS = ("weights", "kv_cache")
# Names that wrappers put in front of a parameter's own name: torch's checkpoint_wrapper
# (activation checkpointing), torch.compile and FSDP1. vLLM's loaders know only the model's names.
_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def single_process_launcher_env():
    """torchrun's variables for one process, set while vLLM builds its engine, then removed.

    ``distributed_executor_backend="external_launcher"`` reads RANK and LOCAL_RANK and joins
    ``env://`` (MASTER_ADDR, MASTER_PORT) when it builds the engine (vLLM 0.31
    ``vllm/v1/executor/uniproc_executor.py:186-197``); nothing reads them later. Left set, they
    would make this process look launched by torchrun to the trainer. Under torchrun they are
    torchrun's and are left alone.
    """
    if launched_by_torchrun():
        yield
        return
    values = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def vllm_module():
    """The installed ``vllm``, or an ImportError naming the extra that installs it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError('rollout_engine=vllm needs the gpu extra: pip install -e ".[trainer,gpu]"') from exc
    return vllm


def make_llm(
    model: str,
    seed: int,
    gpu_memory_utilization: float,
    max_model_len: int | None,
    sleep: bool,
    max_num_batched_tokens: int = 16384,
):
    """A colocated ``vllm.LLM`` for this process (one per rank, tensor parallel size 1).
    ``max_num_batched_tokens`` goes to vLLM's EngineArgs (``LLM(**kwargs)``, vllm 0.32
    vllm/entrypoints/llm.py:223, :336); with chunked prefill (vLLM's default) a prompt longer
    than it is prefilled in chunks (vllm/config/scheduler.py:315-326 refuses it only without)."""
    LLM = vllm_module().LLM
    with single_process_launcher_env():
        return LLM(
            model=model,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_sleep_mode=sleep,
            distributed_executor_backend="external_launcher",  # join torchrun's processes, one engine per rank
            logprobs_mode="processed_logprobs",  # log-probs after temperature, like the trainer's
        )


def colocated_engine(config, tokenizer, device, rank: int = 0) -> "VLLMEngine":
    """The engine a config asks for with ``rollout_engine: vllm`` (one per process)."""
    llm = make_llm(
        config.model,
        config.seed + rank,
        config.vllm_gpu_memory_utilization,
        config.vllm_max_model_len,
        config.vllm_sleep,
        config.vllm_max_num_batched_tokens,
    )
    return VLLMEngine(llm, tokenizer, device, config.vllm_sleep)


def sampling_params(n: int, sampling: Sampling):
    from vllm import SamplingParams

    return SamplingParams(n=n, temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, logprobs=0)


def vllm_weights(policy):
    """``(name, full tensor)`` for every parameter of ``policy`` under the name vLLM's loader
    expects.

    ``named_parameters`` yields a tied weight once, under its owner's name
    (``model.embed_tokens.weight``; ``lm_head.weight`` is its alias). ``state_dict`` yields the
    alias too, and vLLM 0.29+ refuse an alias loaded without its owner
    (``AutoWeightsLoader._check_skipped_aliases``, vLLM 0.29
    ``vllm/model_executor/models/utils.py:459-470``). FSDP2 shards are gathered one parameter
    at a time (``full_tensor``). LoRA adapters are refused: merge them into the weights first.
    """
    for name, param in policy.named_parameters():
        if "lora_" in name:
            raise ValueError(
                f"parameter {name!r} is a LoRA adapter; "
                "merge the adapters (PEFT merge_and_unload) before syncing weights to vLLM"
            )
        for prefix in _WRAPPER_PREFIXES:
            name = name.replace(prefix, "")
        full = param.full_tensor() if hasattr(param, "full_tensor") else param
        yield name, full.detach()


class VLLMEngine:
    """``generate(prompts, counts, sampling, generator)`` on a colocated vLLM engine."""

    def __init__(self, llm, tokenizer, device, sleep: bool = True, params=sampling_params, empty_cache=None):
        """``params(n, sampling)`` builds a request's sampling parameters (vLLM's SamplingParams
        by default); ``empty_cache()`` returns torch's cached GPU blocks to the driver before
        vLLM maps its memory back (``torch.cuda.empty_cache`` by default, a no-op without CUDA)."""
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer must define eos_token and pad_token")
        self.llm, self.tokenizer, self.device, self.sleep = llm, tokenizer, torch.device(device), sleep
        self.params, self.empty_cache = params, empty_cache or (lambda: torch.cuda.empty_cache())
        self.asleep: set[str] = set()
        self.held = False  # inside generating(): no sleep after a generate
        self.weights_current = not sleep  # vLLM holds weights it can sample from
        self.policy = None  # the policy of the last sync, for a re-sync after a sleep
        if sleep:
            self._sleep()

    # --- sleep mode ---------------------------------------------------------------------------
    #
    # vLLM's rules, as the sources of vLLM 0.22-0.32 define them (file:line in their wheels;
    # 0.32 reads as 0.31 in each, at abstract.py:383-385, :398-404 and core.py:1016-1018):
    # - Level 2 discards the weights and the KV cache without a CPU copy; after a wake-up the
    #   weights' memory holds garbage until they are loaded again, and vLLM reloads nothing
    #   itself (0.31 vllm/device_allocator/sleep_mode_backend.py:132, cumem.py:265-278).
    # - Executor.sleep returns without sleeping while the engine sleeps: 0.22-0.30 while any tag
    #   sleeps (vllm/v1/executor/abstract.py:322-325 in 0.22, :337-340 in 0.30), 0.31 only while
    #   `weights` sleeps (:347-350). So a sleep right after waking `weights` is a no-op before
    #   0.31 and discards the freshly loaded weights from 0.31 on.
    # - Executor.wake_up does nothing when one of the tags asked for is awake (0.31 :359-369).
    # - EngineCore.wake_up resumes the scheduler only once every tag is awake from 0.24 on
    #   (0.24 vllm/v1/engine/core.py:812-815); LLM.generate on a paused scheduler waits forever.
    #   0.22-0.23 resume it after any wake-up (0.23 core.py:778-779) and run on unmapped memory.
    # - vLLM's allocator empties torch's cache before it maps memory back only from 0.27
    #   (cumem.py:294-295); the engine does it itself before every wake-up.

    def _wake(self, tag: str) -> None:
        if self.sleep and tag in self.asleep:
            self.empty_cache()
            self.llm.wake_up(tags=[tag])
            self.asleep.discard(tag)

    def _sleep(self) -> None:
        self.llm.sleep(level=2)
        self.asleep = set(TAGS)
        self.weights_current = False

    # --- weights and generation -----------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        """The context vLLM works with: ``vllm_max_model_len``, else what vLLM derived from the
        model's config."""
        return int(self.llm.llm_engine.model_config.max_model_len)

    def check_prompt_lengths(self, prompts, max_new_tokens: int, rows=None) -> None:
        """Refuse prompts that do not leave ``max_new_tokens`` within ``max_model_len``: vLLM
        refuses a prompt longer than its context and cuts a completion at the context's end
        without a word (finish reason "length")."""
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        what = "vLLM's max_model_len (set vllm_max_model_len to change it)"
        check_context(lengths, max_new_tokens, self.max_model_len, what, rows)

    def sync_weights(self, policy) -> None:
        """Copy the policy's weights into vLLM (collective under FSDP2: every rank calls it)."""
        self._wake("weights")
        model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in vllm_weights(policy):
            model.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()
        self.policy, self.weights_current = policy, True

    @contextmanager
    def generating(self):
        """Several :meth:`generate` calls with no training between them: vLLM stays awake from
        the first to the last and sleeps once on leaving (with ``vllm_sleep``), so the weights are
        synced once and woken once instead of once per call."""
        self.held = True
        try:
            yield self
        finally:
            self.held = False
            if self.sleep and not self.asleep:
                self._sleep()

    @torch.no_grad()
    def generate(self, prompts, counts, sampling: Sampling, generator: torch.Generator) -> RolloutBatch:
        """Sample ``counts[q]`` completions of ``prompts[q]``. vLLM seeds its own sampling
        (see the module docstring); ``generator`` is not drawn from."""
        counts = [int(c) for c in counts]
        if len(counts) != len(prompts) or any(c < 0 for c in counts) or sum(counts) == 0:
            raise ValueError(
                f"counts must hold one non-negative integer per prompt ({len(prompts)}) "
                f"and allocate at least one rollout; got {counts}"
            )
        if not self.weights_current:
            if self.policy is None:
                raise RuntimeError(
                    "vLLM's weights were discarded by its level-2 sleep: call sync_weights(policy) before generate"
                )
            self.sync_weights(self.policy)
        wanted = [q for q, c in enumerate(counts) if c > 0]
        ids = [self.tokenizer(prompts[q], add_special_tokens=False)["input_ids"] for q in wanted]
        requests = [{"prompt_token_ids": p} for p in ids]
        params = [self.params(counts[q], sampling) for q in wanted]
        self._wake("kv_cache")
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        if self.sleep and not self.held:
            self._sleep()
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
