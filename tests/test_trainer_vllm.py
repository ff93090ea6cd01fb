"""The vLLM engine's own logic without vLLM: a stand-in LLM object with vLLM's interface
(generate over token-id requests with per-request n and seed, sleep/wake_up, the driver
worker's load_weights) that samples with its own copy of the tiny model."""

import sys
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig, load_config
from trainer.data import arithmetic_task
from trainer.loop import Trainer
from trainer.models import tiny_model, tiny_tokenizer
from trainer.rewards import get_reward
from trainer.rollout import Sampling, TransformersEngine
from trainer.vllm_engine import VLLMEngine, make_llm


class _Loader:
    def __init__(self, model):
        self.model, self.names = model, []

    def load_weights(self, pairs):
        state = self.model.state_dict()
        for name, tensor in pairs:
            state[name].copy_(tensor)
            self.names.append(name)


class StandInLLM:
    """vLLM's LLM as the engine uses it; samples with a separate model instance."""

    def __init__(self, tokenizer, seed=0):
        self.tokenizer, self.model = tokenizer, tiny_model("qwen2", len(tokenizer), seed).eval()
        self.loader = _Loader(self.model)
        self.llm_engine = NS(model_executor=NS(driver_worker=NS(model_runner=NS(model=self.loader))))
        self.calls = []

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags):
        self.calls.append(("wake_up", tuple(tags)))

    def reset_prefix_cache(self):
        self.calls.append(("reset",))

    def generate(self, requests, sampling_params, use_tqdm):
        self.calls.append(("generate", len(requests)))
        engine = TransformersEngine(self.model, self.tokenizer)
        out = []
        for request, params in zip(requests, sampling_params):
            text = self.tokenizer.decode(request["prompt_token_ids"])
            batch = engine.generate([text], [params.n], params.sampling, torch.Generator().manual_seed(params.seed))
            samples = []
            for r in range(params.n):
                length = int(batch.completion_mask[r].sum())
                ids = batch.sequences[r, batch.prompt_length : batch.prompt_length + length].tolist()
                logprobs = [{t: NS(logprob=float(lp))} for t, lp in zip(ids, batch.old_logprobs[r, :length])]
                samples.append(NS(token_ids=ids, logprobs=logprobs))
            out.append(NS(outputs=samples))
        return out


def _params(n, sampling, seed):
    return NS(n=n, sampling=sampling, seed=seed)


def _engine(tok, llm=None):
    return VLLMEngine(llm or StandInLLM(tok), tok, "cpu", sleep=True, params=_params)


def test_counts_per_prompt_and_seeds_from_the_generator():
    tok = tiny_tokenizer()
    engine = _engine(tok)
    prompts = ["1+2=", "3+3=", "0+4="]
    batch = engine.generate(prompts, [3, 0, 2], Sampling(1.0, 3), torch.Generator().manual_seed(5))
    assert batch.prompt_index == [0, 0, 0, 2, 2]
    assert engine.llm.calls[-3:] == [("wake_up", ("kv_cache",)), ("generate", 2), ("sleep", 2)]
    mask = batch.completion_mask
    assert mask[:, 0].all() and not (mask[:, 1:] & ~mask[:, :-1]).any()
    texts = tok.batch_decode(batch.sequences[:, : batch.prompt_length], skip_special_tokens=True)
    assert texts == ["1+2="] * 3 + ["0+4="] * 2
    again = engine.generate(prompts, [3, 0, 2], Sampling(1.0, 3), torch.Generator().manual_seed(5))
    assert torch.equal(again.sequences, batch.sequences)
    with pytest.raises(ValueError, match="allocate at least one rollout"):
        engine.generate(prompts, [0, 0, 0], Sampling(), torch.Generator())


def test_sync_copies_every_weight_and_the_sampler_log_probs_match_after_it():
    tok = tiny_tokenizer()
    policy = tiny_model("qwen2", len(tok), seed=7).eval()
    engine = _engine(tok)
    engine.sync_weights(policy)
    assert set(engine.llm.loader.names) == set(policy.state_dict())
    assert engine.llm.calls[1:4] == [("wake_up", ("weights",)), ("reset",), ("sleep", 2)]
    batch = engine.generate(["2+2="], [4], Sampling(1.0, 3), torch.Generator().manual_seed(0))
    from trainer.rollout import completion_logprobs

    with torch.no_grad():
        recomputed = completion_logprobs(policy, batch, 1.0)
    assert (recomputed - batch.old_logprobs).abs().max() < 1e-5


def _train(engine, steps=150):
    tok = tiny_tokenizer()
    config = TrainConfig(
        model="tiny:qwen2", template="plain", chat_template=False, reward="first_number", embedding="hashed", prompts_per_step=8,
        budget=64, min_rollouts=4, max_rollouts=16, max_new_tokens=2, learning_rate=0.002, warmup_steps=0, steps=steps,
        micro_batch_size=64, tensorboard=False, progress=False, output_dir="unused",
    )
    trainer = Trainer(config, tiny_model("qwen2", len(tok)), tok, arithmetic_task(64, np.random.default_rng(0)), get_reward("first_number"), engine=engine(tok))
    rewards = np.array([trainer.train_step()[0]["reward/mean"] for _ in range(steps)])
    return rewards[:30].mean(), rewards[-30:].mean(), trainer


def test_training_through_the_engine_learns_and_needs_the_weight_sync():
    """With the sync, sampling follows the policy and the reward rises as with transformers;
    negative control: an engine that never syncs keeps sampling the initial model, and the
    reward stays where it started."""
    first, last, trainer = _train(_engine)
    assert last > first + 0.08, f"{first:.3f} -> {last:.3f}"
    assert trainer.engine.llm.calls.count(("wake_up", ("weights",))) == 150

    class NoSync(VLLMEngine):
        def sync_weights(self, policy):
            pass

    first, last, _ = _train(lambda tok: NoSync(StandInLLM(tok), tok, "cpu", params=_params))
    assert abs(last - first) < 0.05, f"{first:.3f} -> {last:.3f}"


def test_without_vllm_the_engine_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[gpu\]"'):
        make_llm("some/model", 0, 0.3, None, True)


def test_vllm_config_refusals():
    with pytest.raises(ValueError, match="needs recompute_old_logprobs=true"):
        load_config(None, ["rollout_engine=vllm", "model=Qwen/Qwen2.5-Math-1.5B", "recompute_old_logprobs=false"])
    with pytest.raises(ValueError, match="not a tiny: model"):
        load_config(None, ["rollout_engine=vllm"])
