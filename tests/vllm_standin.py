"""A stand-in for ``vllm`` 0.22-0.32 as trainer/vllm_engine.py uses it, with the semantics vLLM's
sources define per version (file:line of the vLLM wheels, paths relative to the wheel root):

- ``LLM(...)`` with ``distributed_executor_backend="external_launcher"`` reads RANK and
  LOCAL_RANK and joins ``env://`` (MASTER_ADDR, MASTER_PORT) while it builds the engine
  (0.31 vllm/v1/executor/uniproc_executor.py:186-197); the stand-in raises KeyError where one
  is missing. ``max_model_len`` defaults to the model's ``max_position_embeddings``.
- ``sleep(level)``: the engine core pauses the scheduler, then the executor sleeps unless it
  already does: 0.22-0.30 return early while *any* tag sleeps (0.22
  vllm/v1/executor/abstract.py:322-325), 0.31 only while ``weights`` sleeps (0.31 :347-350).
  Level 2 discards the weights (no CPU copy; 0.31 vllm/device_allocator/sleep_mode_backend.py:132
  and cumem.py:265-278); level 1 keeps a CPU copy.
- ``wake_up(tags)``: the executor does nothing when it is not asleep or when one of the tags
  asked for is awake (0.31 abstract.py:359-369). The engine core resumes the scheduler after
  any wake-up in 0.22-0.23 (0.23 vllm/v1/engine/core.py:778-779), and only once every tag is
  awake from 0.24 on (0.24 core.py:812-815). Before 0.27 vLLM's allocator does not empty
  torch's cache before it maps its memory back (it does from 0.27,
  vllm/device_allocator/cumem.py:294-295): there a wake-up not directly preceded by
  ``empty_cache`` (the event the engine's ``empty_cache`` callable records) raises the
  out-of-memory error that memory still held by torch's caching allocator can cause.
- ``generate`` on a paused scheduler waits forever in real vLLM; here it raises
  :class:`WouldHang`. With the scheduler running but a tag asleep (0.22-0.23) it runs on
  unmapped memory, and on discarded weights it samples garbage: both raise
  :class:`GarbageOutput`. A prompt longer than ``max_model_len`` is refused; a completion that
  would pass it is cut at ``max_model_len`` without a word, as vLLM does.
- The prefix cache (on by default, 0.32 vllm/engine/arg_utils.py:3021-3022) keys each full block
  of BLOCK_SIZE prompt tokens by its tokens alone (0.32 vllm/v1/core/kv_cache_utils.py:625-663);
  the block holding a prompt's last token is always computed. A block cached before a
  ``load_weights`` and hit after it raises :class:`StaleKV`. ``reset_prefix_cache`` empties it,
  and so does a sleep at level >= 1 (the engine core resets its caches, 0.27
  vllm/v1/engine/core.py:882-883, 0.32 :973-974).
- 0.32 reads as 0.31 in everything above (0.32 abstract.py:383-385, :398-404, core.py:1016-1018,
  models/utils.py:491-502, uniproc_executor.py:186-197 unchanged); its ``wake_up`` now returns
  whether every tag is awake, which the engine does not read.
- ``load_weights`` writes into the weights' memory, which must be awake. From 0.29 a tied
  alias (``lm_head.weight`` of a model with tied embeddings) loaded without its owner in the
  same call raises (0.29 vllm/model_executor/models/utils.py:459-470); before 0.29 it is
  skipped. Weights discarded by a level-2 sleep are garbage until every parameter is loaded
  again.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass

import torch

from trainer.rollout import Sampling, sample_tokens

VERSIONS = ((0, 22), (0, 23), (0, 24), (0, 27), (0, 28), (0, 29), (0, 30), (0, 31), (0, 32))
TAGS = frozenset({"weights", "kv_cache"})
EMBEDDING, TIED_ALIAS = "model.embed_tokens.weight", "lm_head.weight"
BLOCK_SIZE = 16  # tokens per KV-cache block, vLLM's default on CUDA


class StaleKV(RuntimeError):
    """A request reused prefix-cache blocks computed with the weights of before the last load."""


class WouldHang(RuntimeError):
    """Real vLLM would wait forever here."""


class GarbageOutput(RuntimeError):
    """Real vLLM would sample from unmapped or discarded memory here."""


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    max_tokens: int = 16
    logprobs: int | None = None
    seed: int | None = None


class _Executor:
    """The executor's sleep bookkeeping and the worker's weights (vllm/v1/executor/abstract.py)."""

    def __init__(self, llm):
        self.llm, self.sleeping_tags, self.is_sleeping_flag = llm, set(), False

    @property
    def is_sleeping(self) -> bool:
        return bool(self.sleeping_tags) if self.llm.version >= (0, 31) else self.is_sleeping_flag

    def sleep(self, level: int) -> None:
        busy = "weights" in self.sleeping_tags if self.llm.version >= (0, 31) else self.is_sleeping_flag
        if busy:
            return  # "Executor is already sleeping."
        if level >= 2:
            self.llm.discard_weights()
        self.sleeping_tags |= TAGS
        self.is_sleeping_flag = True

    def wake_up(self, tags, cache_emptied: bool) -> None:
        if not self.is_sleeping or (tags and any(t not in self.sleeping_tags for t in tags)):
            return  # "Executor is not sleeping." / "Tag ... is not in sleeping tags"
        if self.llm.version < (0, 27) and not cache_emptied:
            raise torch.OutOfMemoryError(
                "CUDA out of memory while vLLM maps its memory back: torch's caching allocator still holds it"
            )
        self.sleeping_tags -= set(tags or TAGS)
        if not self.sleeping_tags:
            self.is_sleeping_flag = False


class _Model:
    """The driver worker's model: ``load_weights`` as vLLM's AutoWeightsLoader applies it."""

    def __init__(self, llm):
        self.llm = llm

    def load_weights(self, pairs):
        llm = self.llm
        pairs = list(pairs)
        llm.events.append("load")
        llm.weights_version += 1
        if "weights" in llm.executor.sleeping_tags:
            raise GarbageOutput("load_weights into the memory of sleeping weights (unmapped)")
        names = {name for name, _ in pairs}
        if llm.tied and TIED_ALIAS in names and EMBEDDING not in names:
            if llm.version >= (0, 29):
                raise ValueError(
                    f"{TIED_ALIAS!r} was skipped because it is tied to {EMBEDDING!r} in Qwen2ForCausalLM, "
                    f"but {EMBEDDING!r} "
                    "was not found in the checkpoint, so the tied weight is uninitialized."
                )
        params = dict(llm.model.named_parameters())
        for name, tensor in pairs:
            if llm.tied and name == TIED_ALIAS:
                continue
            if name not in params:
                raise ValueError(f"There is no module or parameter named {name!r} in Qwen2ForCausalLM")
            params[name].data.copy_(tensor)
            llm.garbage.discard(name)
        return names


class LLM:
    """``vllm.LLM`` as the engine uses it; samples with its own copy of the model."""

    version: tuple[int, int] = (0, 32)

    def __init__(
        self,
        model,
        seed=0,
        gpu_memory_utilization=0.9,
        max_model_len=None,
        enable_sleep_mode=False,
        distributed_executor_backend=None,
        logprobs_mode=None,
        **_,
    ):
        import os

        from trainer.models import load_policy, load_tokenizer

        if distributed_executor_backend == "external_launcher":
            self.launcher_env = {
                name: os.environ[name] for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
            }
        self.model = (
            load_policy(model, torch.device("cpu"), torch.float32, 0).eval() if isinstance(model, str) else model
        )
        self.tokenizer = load_tokenizer(model) if isinstance(model, str) else None
        self.tied = bool(self.model.config.tie_word_embeddings)
        self.max_model_len = max_model_len or self.model.config.max_position_embeddings
        self.sleep_mode, self.events, self.garbage = enable_sleep_mode, [], set()
        # prefix cache: the hash of each cached full block's token prefix -> the weights it was computed with
        self.prefix_cache: dict[tuple, int] = {}
        self.weights_version = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.executor = _Executor(self)
        self.scheduler_paused = False
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=_Model(self)))
        self.llm_engine = types.SimpleNamespace(
            model_executor=types.SimpleNamespace(driver_worker=worker),
            model_config=types.SimpleNamespace(max_model_len=self.max_model_len),
        )

    def discard_weights(self) -> None:
        self.garbage = {name for name, _ in self.model.named_parameters()}

    def sleep(self, level: int = 1) -> None:
        if not self.sleep_mode:
            raise ValueError("Sleep mode is not enabled. Please compile vLLM with enable_sleep_mode=True.")
        self.prefix_cache.clear()  # the engine core resets its caches before it sleeps (level >= 1)
        self.events.append("sleep")
        self.scheduler_paused = True
        self.executor.sleep(level)

    def wake_up(self, tags=None) -> None:
        cache_emptied = self.events[-1:] == ["empty_cache"]
        self.events.append("wake_up")
        self.executor.wake_up(tags, cache_emptied)
        if self.version < (0, 24) or not self.executor.is_sleeping:
            self.scheduler_paused = False

    def reset_prefix_cache(self) -> bool:
        self.events.append("reset")
        self.prefix_cache.clear()
        return True

    def _cached_prefix(self, prompt) -> None:
        """Look up and fill the prefix cache for ``prompt``: its full blocks but the one holding the
        last token (which is always recomputed), keyed by their tokens alone."""
        for end in range(BLOCK_SIZE, len(prompt), BLOCK_SIZE):
            key = tuple(prompt[:end])
            if self.prefix_cache.setdefault(key, self.weights_version) != self.weights_version:
                raise StaleKV(
                    f"the prompt's first {end} tokens hit prefix-cache blocks computed before the last "
                    "load_weights: its samples come partly from the previous weights"
                )

    def generate(self, requests, sampling_params, use_tqdm=True):
        self.events.append("generate")
        if self.scheduler_paused:
            raise WouldHang(
                f"LLM.generate on a paused scheduler (sleeping tags: {sorted(self.executor.sleeping_tags)})"
            )
        if self.executor.sleeping_tags:
            raise GarbageOutput(f"generate with sleeping tags {sorted(self.executor.sleeping_tags)}: unmapped memory")
        if self.garbage:
            raise GarbageOutput(f"generate on discarded weights ({len(self.garbage)} parameters never reloaded)")
        return [self._request(r["prompt_token_ids"], p) for r, p in zip(requests, sampling_params)]

    def _request(self, prompt, params):
        if len(prompt) > self.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {len(prompt)}) is longer than the maximum model length "
                f"of {self.max_model_len}."
            )
        self._cached_prefix(prompt)
        room = min(
            params.max_tokens, self.max_model_len - len(prompt)
        )  # the rest is cut silently (finish_reason "length")
        ids = torch.tensor([prompt])
        ids_of = self.tokenizer or _ids_only(self.model)
        tokens, logps, masks = sample_tokens(
            self.model,
            ids,
            torch.ones_like(ids),
            Sampling(params.temperature, room),
            self.generator,
            ids_of.pad_token_id,
            ids_of.eos_token_id,
            rollouts=[0] * params.n,  # one prefill per request, as vLLM's prefix cache does
        )
        outputs = []
        for row, lp, mask in zip(tokens, logps, masks):
            length = int(mask.sum())
            ids_out = row[:length].tolist()
            outputs.append(
                types.SimpleNamespace(
                    token_ids=ids_out,
                    logprobs=[
                        {t: types.SimpleNamespace(logprob=float(v))} for t, v in zip(ids_out, lp[:length].tolist())
                    ],
                )
            )
        return types.SimpleNamespace(outputs=outputs)


def _ids_only(model):
    config = model.config
    return types.SimpleNamespace(pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id)


def module(version: tuple[int, int]) -> types.ModuleType:
    """A ``vllm`` module of ``version`` to put into ``sys.modules``."""
    fake = types.ModuleType("vllm")
    fake.LLM = type("LLM", (LLM,), {"version": version})
    fake.SamplingParams = SamplingParams
    fake.__version__ = ".".join(map(str, version)) + ".0"
    return fake


def standin(version, model, max_model_len=None, seed=0) -> LLM:
    """An ``LLM`` of ``version`` holding a copy of ``model`` (as loaded from its path)."""
    llm_class = type("LLM", (LLM,), {"version": version})
    return llm_class(copy.deepcopy(model).eval(), seed=seed, max_model_len=max_model_len, enable_sleep_mode=True)
