"""The rollout engines (``rollout_engine``): one table, :data:`ENGINES`, of how each is checked
and built. Every place that samples (trainer/run.py, trainer/evaluate.py, the Trainer's
default, scripts/gpu_smoke.py) builds its engine with :func:`build_engine`.

- ``transformers``: trainer.rollout.TransformersEngine samples with the policy itself (CPU or
  GPU; each prompt prefilled once for its rollouts unless ``share_prompts: false``);
- ``vllm``: trainer.vllm_engine.VLLMEngine, one colocated ``vllm.LLM`` per process, its weights
  synced from the policy before each generation. vLLM's log-probs differ from the trainer's, so
  it needs ``recompute_old_logprobs: true``, and it loads only what vLLM can load (a hub name or
  a local folder).

An engine's ``refusal(config)`` is called by TrainConfig's validation; ``available()`` before
any model loads (an ImportError naming the extra to install); ``build(config, policy,
tokenizer, device, world)`` makes it. The builders import what they build (torch, vLLM) when
they are called, so that the config's checks import neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trainer.model_sources import is_gguf_source
from trainer.registry import choose


@dataclass(frozen=True)
class Engine:
    """How one rollout engine is checked and built (see the module docstring)."""

    build: Callable
    refusal: Callable = lambda config: None
    available: Callable[[], None] = lambda: None


def _transformers(config, policy, tokenizer, device, world):
    from trainer import distributed
    from trainer.rollout import TransformersEngine

    # FSDP needs every rank to run the same forward passes: a chunk ends when every rank's has
    all_done = lambda flag: distributed.all_true(flag, world, device)  # noqa: E731
    return TransformersEngine(
        policy, tokenizer, config.generation_batch_size, all_done, share_prompt_cache=config.share_prompts
    )


def _vllm(config, policy, tokenizer, device, world):
    from trainer.vllm_engine import colocated_engine

    return colocated_engine(config, tokenizer, device, world.rank)


def _vllm_available() -> None:
    from trainer.vllm_engine import vllm_module

    vllm_module()


def _vllm_refusal(config) -> str | None:
    if not config.recompute_old_logprobs:
        return (
            "rollout_engine=vllm needs recompute_old_logprobs=true: "
            "vLLM's log-probs differ from the trainer's (trainer/vllm_engine.py)"
        )
    if config.model.startswith("tiny:") or is_gguf_source(config.model):
        return (
            "rollout_engine=vllm needs a model vLLM can load (hub name or local folder), not a tiny: model, "
            f"a .gguf file or a packaged model; got {config.model!r} (rlvr-convert writes one to a folder)"
        )
    if not 0 < config.vllm_gpu_memory_utilization < 1:
        return f"vllm_gpu_memory_utilization must lie in (0, 1); got {config.vllm_gpu_memory_utilization}"
    if config.vllm_max_model_len is not None and config.vllm_max_model_len < 1:
        return f"vllm_max_model_len must be an integer >= 1 (or null: the model's own); got {config.vllm_max_model_len}"
    if config.vllm_max_num_batched_tokens < 1:
        return f"vllm_max_num_batched_tokens must be an integer >= 1; got {config.vllm_max_num_batched_tokens}"
    return None


ENGINES = {
    "transformers": Engine(_transformers),
    "vllm": Engine(_vllm, _vllm_refusal, _vllm_available),
}


def engine_of(config) -> Engine:
    """The table entry of ``config.rollout_engine``."""
    return choose(ENGINES, config.rollout_engine, "rollout_engine")


def build_engine(config, policy, tokenizer, device, world=None):
    """The engine ``config.rollout_engine`` names, sampling ``policy``'s weights on ``device``
    (``world``: trainer.distributed.World, one process by default)."""
    if world is None:
        from trainer.distributed import World

        world = World()
    return engine_of(config).build(config, policy, tokenizer, device, world)
