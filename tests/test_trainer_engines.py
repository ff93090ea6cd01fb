"""trainer.engines: the table is the only list of engines, and build_engine the only builder."""

import numpy as np
import pytest

from tests.conftest import tiny_config
from trainer import engines
from trainer.data import arithmetic_task
from trainer.engines import ENGINES, Engine, build_engine
from trainer.loop import Trainer
from trainer.models import tiny_model, tiny_tokenizer
from trainer.rewards import get_reward
from trainer.rollout import TransformersEngine


class Recording(TransformersEngine):
    """Transformers sampling that counts its generate calls."""

    calls = 0

    def generate(self, *args, **kwargs):
        Recording.calls += 1
        return super().generate(*args, **kwargs)


def test_a_new_table_entry_is_what_the_trainer_samples_with(monkeypatch):
    """An engine added to ENGINES is accepted by the config and built for the Trainer, which
    samples through it each step (control: the default entry builds a plain TransformersEngine)."""
    monkeypatch.setitem(
        ENGINES,
        "recording",
        Engine(lambda config, policy, tok, device, world: Recording(policy, tok, config.generation_batch_size)),
    )
    tok = tiny_tokenizer()
    config = tiny_config(rollout_engine="recording", prompts_per_step=4, budget=16, max_new_tokens=2)
    trainer = Trainer(
        config,
        tiny_model("qwen2", len(tok)),
        tok,
        arithmetic_task(8, np.random.default_rng(0)),
        get_reward("first_number"),
    )
    assert isinstance(trainer.engine, Recording)
    Recording.calls = 0
    trainer.train_step()
    trainer.train_step()
    assert Recording.calls == 2
    plain = build_engine(tiny_config(), trainer.policy, tok, trainer.device)
    assert type(plain) is TransformersEngine


def test_an_engine_not_in_the_table_is_refused_naming_the_table():
    with pytest.raises(ValueError, match="rollout_engine must be one of transformers, vllm"):
        tiny_config(rollout_engine="sglang")
    with pytest.raises(ValueError, match="rollout_engine"):
        engines.engine_of(type("C", (), {"rollout_engine": "sglang"})())
