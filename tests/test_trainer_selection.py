"""Prompt selection in the trainer (trainer.selection): DAPO's filter and refill keep the batch
size and never train on an all-equal group, the round limit stops the run keeping its
checkpoints, GRESO's state survives a resume, and the refusals."""

import re
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import run_trainer, tiny_config, without_timings
from trainer.checkpoint import load_checkpoint
from trainer.data import PromptSampler, arithmetic_task
from trainer.distributed import World
from trainer.experience import concat_batches, select_groups
from trainer.logprobs import completion_logprobs
from trainer.logs import read_jsonl
from trainer.loop import Trainer
from trainer.models import tiny_model, tiny_tokenizer
from trainer.rewards import get_reward
from trainer.rollout import Sampling, TransformersEngine

SIZES = dict(prompts_per_step=8, budget=64, max_new_tokens=2, micro_batch_size=64)


def _first_operand(prompt: str) -> int:
    return int(re.match(r"\s*(\d+)", prompt).group(1))


def odd_mixed_even_constant(prompts, completions, answers):
    """Rewards that make a group all-equal when the question's first operand is even (all 1 when
    it is a multiple of 4, else all 0) and mixed when it is odd (0, 1, 0, ... by position: a
    group's rollouts are contiguous)."""
    out = []
    for i, prompt in enumerate(prompts):
        a = _first_operand(prompt)
        out.append(float(i % 2) if a % 2 else float(a % 4 == 0))
    return out


def _trainer(reward, examples=32, **fields):
    tok = tiny_tokenizer()
    config = tiny_config(**(SIZES | fields))
    task = arithmetic_task(examples, np.random.default_rng(0))
    return Trainer(config, tiny_model("qwen2", len(tok)), tok, task, reward), task


def test_dapo_trains_only_on_mixed_groups_in_draw_order_and_keeps_the_batch_size():
    trainer, task = _trainer(odd_mixed_even_constant, selection="dapo")
    odd = {e.prompt_id for e in task if _first_operand(e.question) % 2}
    assert 0 < len(odd) < len(task)
    sampler = PromptSampler(len(task), 8, np.random.default_rng(trainer.cfg.seed))  # the trainer's prompt order
    for _ in range(3):
        metrics, rows = trainer.train_step()
        assert len(rows) == 64  # 8 groups of 8, contiguous (a prompt drawn in two passes has two groups)
        groups = [rows[k : k + 8] for k in range(0, 64, 8)]
        assert all(len({r["prompt_id"] for r in g}) == 1 for g in groups)
        rewards = [[r["reward"] for r in g] for g in groups]
        assert all(min(g) < max(g) for g in rewards)  # never an all-equal group
        draws = [int(i) for _ in range(metrics["selection/rounds"]) for i in sampler.next()]
        informative = [i for i in draws if i in odd]
        assert [g[0]["prompt_id"] for g in groups] == informative[:8]  # the first ones in draw order
        assert metrics["selection/rollouts_generated"] == 64 * metrics["selection/rounds"]
        assert metrics["selection/rollouts_trained"] == 64 and metrics["zero_variance_groups"] == 0
        dropped = metrics["selection/rounds"] * 8 - len(informative)
        assert metrics["selection/groups_dropped"] == dropped > 0
        assert metrics["selection/groups_surplus"] == len(informative) - 8


def test_concatenated_rounds_give_the_same_log_probs_as_their_own_batches():
    """Groups taken from batches of different prompt and completion widths and concatenated (more
    left and right padding) keep their tokens, masks and log-probs."""
    tok = tiny_tokenizer()
    model = tiny_model("qwen2", len(tok)).eval()
    engine, gen = TransformersEngine(model, tok), torch.Generator().manual_seed(0)
    first = engine.generate(["1+1=", "3+4="], [2, 3], Sampling(1.0, 3), gen)
    second = engine.generate(["10+20+30="], [2], Sampling(1.0, 5), gen)
    parts = [select_groups(first, [1]), select_groups(second, [0])]
    both = concat_batches(parts, tok.pad_token_id)
    assert both.prompt_index == [0, 0, 0, 1, 1]
    assert both.completions == first.completions[2:] + second.completions
    with torch.no_grad():
        joined = completion_logprobs(model, both, 1.0)
        alone = [completion_logprobs(model, p, 1.0) for p in parts]
    for rows, part, lp in ((slice(0, 3), parts[0], alone[0]), (slice(3, 5), parts[1], alone[1])):
        width = part.completion_mask.shape[1]
        assert torch.equal(both.completion_mask[rows, :width], part.completion_mask)
        assert not both.completion_mask[rows, width:].any()
        torch.testing.assert_close(joined[rows, :width], lp, atol=1e-5, rtol=1e-5)


CALLS = {"mixed": 0}


def mixed_then_constant(prompts, completions, answers):
    """0, 1, 0, ... by position for the first CALLS["mixed"] calls, then all 0: every group equal."""
    CALLS["mixed"] -= 1
    return [float(i % 2) if CALLS["mixed"] >= 0 else 0.0 for i in range(len(completions))]


def test_too_few_informative_groups_stop_the_run_after_max_rounds_keeping_the_checkpoints(
    tmp_path, monkeypatch, capsys
):
    """Steps 1-2 keep every group (one round each); from step 3 on every group is all-equal: after
    max_generation_rounds = 2 rounds the run stops with exit status 1, naming the setting and its
    range, and steps 1-2's logs and checkpoints are intact."""
    monkeypatch.setitem(CALLS, "mixed", 1 + 2)  # the pre-flight call, then one round in each of steps 1 and 2
    status = run_trainer(
        tmp_path,
        "reward=tests.test_trainer_selection:mixed_then_constant",
        "selection=dapo",
        "max_generation_rounds=2",
        "steps=5",
        "save_every=1",
        "max_prompts=16",
    )
    err = capsys.readouterr().err
    assert status == 1
    assert "selection=dapo: 0 of prompts_per_step = 8 groups with unequal rewards" in err
    assert "max_generation_rounds = 2 rounds (128 rollouts, 16 all-equal groups dropped)" in err
    assert "raise max_generation_rounds (an integer >= 1)" in err
    assert f"the newest checkpoint: {tmp_path / 'checkpoints' / 'step-2'}" in err
    assert [m["step"] for m in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert load_checkpoint(tmp_path / "checkpoints" / "step-2")["step"] == 2  # digests verified


def test_greso_resume_replays_the_uninterrupted_run(tmp_path):
    """Resuming from the step-2 checkpoint of a 4-step GRESO run replays steps 3 and 4 exactly:
    the skipper's histories and p_easy / p_hard travel in the checkpoint (and prompts are skipped
    after the resume point, so they matter)."""
    common = ("steps=4", "save_every=2", "selection=greso", "max_prompts=16")
    assert run_trainer(tmp_path / "whole", *common) == 0
    whole = read_jsonl(tmp_path / "whole" / "metrics.jsonl")
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-4")
    assert run_trainer(tmp_path / "cut", *common, flags=["--resume"]) == 0
    resumed = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    assert without_timings(resumed) == without_timings(whole)
    assert sum(m["selection/prompts_skipped"] for m in whole[2:]) > 0
    assert whole[-1]["selection/p_easy"] != 0.5 or whole[-1]["selection/p_hard"] != 0.5


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            dict(selection="dapo", allocation="vip", min_rollouts=4),
            "selection=dapo needs allocation=uniform .*; got allocation=vip",
        ),
        (
            dict(selection="greso", budget=60),
            "selection=greso needs budget C = 60 to be a multiple of prompts_per_step = 8",
        ),
        (dict(selection="dapo", max_generation_rounds=0), "max_generation_rounds must be an integer >= 1; got 0"),
    ],
)
def test_selection_config_refusals_name_the_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**(SIZES | fields))


def test_greso_needs_binary_rewards_and_dapo_does_not():
    assert tiny_config(**SIZES, selection="greso").binary_rewards
    assert not tiny_config(**SIZES, selection="dapo").binary_rewards


def test_selection_with_several_processes_is_refused():
    tok = tiny_tokenizer()
    config = tiny_config(**SIZES, selection="dapo")
    with pytest.raises(ValueError, match=r"selection=dapo needs a single process \(selection=none with torchrun\)"):
        Trainer(
            config,
            tiny_model("qwen2", len(tok)),
            tok,
            arithmetic_task(16, np.random.default_rng(0)),
            get_reward("first_number"),
            world=World(0, 2),
        )
