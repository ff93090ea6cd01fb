"""The old log-probs taken from the update pass (Trainer.old_from_update) train as the separate
pass does, and only where the policy has not moved between the two passes."""

import numpy as np
import pytest

from tests.conftest import tiny_config
from trainer.data import arithmetic_task
from trainer.loop import Trainer
from trainer.models import tiny_model, tiny_tokenizer
from trainer.rewards import get_reward

SIZES = dict(prompts_per_step=4, budget=16, min_rollouts=3, max_rollouts=8, max_new_tokens=2, micro_batch_size=8)


class SeparatePass(Trainer):
    """The trainer with the old log-probs always recomputed by their own pass."""

    old_from_update = False


class UpdatePassAlways(Trainer):
    """The negative control: the update pass's log-probs as old ones whatever the schedule."""

    old_from_update = True


def _steps(trainer_class, steps=2, **fields):
    tok = tiny_tokenizer()
    config = tiny_config(**(SIZES | fields))
    trainer = trainer_class(
        config,
        tiny_model("qwen2", len(tok)),
        tok,
        arithmetic_task(16, np.random.default_rng(0)),
        get_reward("first_number"),
    )
    metrics = [trainer.train_step()[0] for _ in range(steps)]
    return trainer, metrics


def _max_weight_gap(a: Trainer, b: Trainer) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.policy.parameters(), b.policy.parameters()))


def test_one_update_per_batch_takes_the_old_logprobs_from_the_update_pass():
    reused, separate = _steps(Trainer), _steps(SeparatePass)
    assert reused[0].old_from_update and not separate[0].old_from_update
    assert _max_weight_gap(reused[0], separate[0]) < 1e-6  # measured: 0.0, the same weights to the bit
    for mine, theirs in zip(reused[1], separate[1]):
        for key in ("loss", "grad_norm", "entropy"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key


def _old_passes(trainer_class, monkeypatch) -> int:
    """How many times one step runs the policy's gradient-free log-prob pass."""
    from trainer import loop

    calls = []
    real = loop.logprobs_in_micro_batches
    monkeypatch.setattr(loop, "logprobs_in_micro_batches", lambda model, *a: calls.append(model) or real(model, *a))
    trainer, _ = _steps(trainer_class, steps=1)
    return sum(model is trainer.policy for model in calls)


def test_the_reuse_drops_the_old_pass(monkeypatch):
    assert _old_passes(Trainer, monkeypatch) == 0 and _old_passes(SeparatePass, monkeypatch) == 1


def test_a_second_epoch_keeps_the_separate_pass():
    """In the second epoch the policy has moved, so the update pass's log-probs are not the old
    ones: forcing the reuse (the control) trains to other weights."""
    correct, _ = _steps(Trainer, ppo_epochs=2, learning_rate=1e-2)
    forced, _ = _steps(UpdatePassAlways, ppo_epochs=2, learning_rate=1e-2)
    assert not correct.old_from_update and _max_weight_gap(correct, forced) > 1e-3


def test_a_second_mini_batch_keeps_the_separate_pass():
    """With two mini-batches no single update pass covers every rollout before the policy moves:
    the forced reuse (the control) cannot even form the step's old log-probs."""
    correct, _ = _steps(Trainer, mini_batches=2)
    assert not correct.old_from_update
    with pytest.raises(RuntimeError, match="must match the size"):
        _steps(UpdatePassAlways, mini_batches=2)


def test_a_kl_keeps_the_separate_pass():
    """tau and the KL's log ratio need the old log-probs of every rollout before the update."""
    tok = tiny_tokenizer()
    trainer = Trainer(
        tiny_config(**SIZES, kl_coef=0.1),
        tiny_model("qwen2", len(tok)),
        tok,
        arithmetic_task(16, np.random.default_rng(0)),
        get_reward("first_number"),
        reference=tiny_model("qwen2", len(tok)),
    )
    assert not trainer.old_from_update
    assert trainer.train_step()[0]["loss"] == pytest.approx(trainer.train_step()[0]["loss"], abs=10.0)  # it runs
