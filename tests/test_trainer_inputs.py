"""The trainer's inputs refused before (or, for model output, at) the step that would use them:
dataset rows and reward callables (timeout, failure on one completion, non-binary values where
the allocation needs 0/1)."""

import json
import signal
import time

import pytest

from tests.conftest import ROOT
from trainer.data import load_examples
from trainer.deadline import Expired, call_with_deadline
from trainer.rewards import checked_rewards
from trainer.run import main
from trainer.run_folder import run_records

TINY = ["--config", str(ROOT / "trainer" / "configs" / "tiny_cpu.yaml")]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _sums(n=8):
    return [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(n)]


def _refused(tmp_path, capsys, *overrides):
    """Run the CLI on the tiny config; assert it refuses before training (the folder holds no
    run: at most the lock it took); return its stderr."""
    out = tmp_path / "run"
    args = TINY + ["--set", f"output_dir={out}"] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 2
    assert run_records(out) == []
    return capsys.readouterr().err


# --- dataset rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ({"prompt": None, "answer": "2"}, r"row 1: the prompt \('prompt'\) is null"),
        ({"answer": "2"}, r"row 1: the prompt \('prompt'\) is null"),  # datasets fills a missing key with null
        ({"prompt": "1+1=", "answer": None}, r"row 1: the answer \('answer'\) is null"),
        ({"prompt": "1+1="}, r"row 1: the answer \('answer'\) is null"),
        ({"prompt": "", "answer": "2"}, r"row 1: the prompt \('prompt'\) is empty"),
        ({"prompt": "  \n", "answer": "2"}, r"row 1: the prompt \('prompt'\) is empty"),
        ({"prompt": "1+1=", "answer": ""}, r"row 1: the answer \('answer'\) is empty"),
        (
            {"prompt": [{"role": "user", "content": None}], "answer": "2"},
            "row 1: the last user message of 'prompt' is null",
        ),
    ],
)
def test_null_missing_or_empty_prompt_or_answer_is_refused_with_its_row(tmp_path, bad_row, message):
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "0+1=", "answer": "1"}, bad_row, {"prompt": "2+1=", "answer": "3"}])
    with pytest.raises(ValueError, match=message):
        load_examples(path)


def test_cli_refuses_a_null_answer_before_training(tmp_path, capsys):
    """The null answer would otherwise be the text "None", and "Answer: None" would be rewarded."""
    rows = _sums()
    rows[5]["answer"] = None
    err = _refused(tmp_path, capsys, f"dataset={_jsonl(tmp_path / 'd.jsonl', rows)}")
    assert "row 5: the answer ('answer') is null" in err


def test_cli_refuses_a_prompt_longer_than_the_context_before_generating(tmp_path, capsys):
    """A 100,000-character prompt: the tiny model has 256 positions (a real model's forward pass
    on it would try to allocate gigabytes); refused at start-up, naming the prompt and the numbers."""
    rows = _sums()
    rows[3]["prompt"] = "1" * 100_000 + "+1="
    err = _refused(tmp_path, capsys, f"dataset={_jsonl(tmp_path / 'd.jsonl', rows)}", "template=plain")
    assert "the prompt of dataset row 3 has 100003 tokens" in err and "max_position_embeddings) = 256" in err


# --- reward callables -----------------------------------------------------------------------------


def sleepy(prompts, completions, answers):
    time.sleep(60)
    return [1.0] * len(completions)


def stubborn(prompts, completions, answers):
    """Hangs and swallows every Exception."""
    while True:
        try:
            time.sleep(60)
        except Exception:
            pass


def picky(prompts, completions, answers):
    """Fails only on one kind of model output."""
    return [float(int(c.rsplit(" ", 1)[-1]) == int(a)) for c, a in zip(completions, answers)]


def partial_credit(prompts, completions, answers):
    return [1.0 if c == f"Answer: {a}" else 0.5 for c, a in zip(completions, answers)]


@pytest.mark.parametrize("fn", [sleepy, stubborn])
def test_a_hanging_reward_times_out_naming_the_reward_and_the_limit(fn):
    handler = signal.getsignal(signal.SIGINT)
    start = time.perf_counter()
    message = f"reward function {fn.__name__} did not return within reward_timeout_s = 0.3 s"
    with pytest.raises(TimeoutError, match=message):
        checked_rewards(fn, ["q"], ["c"], ["a"], timeout_s=0.3)
    assert time.perf_counter() - start < 5
    assert signal.getsignal(signal.SIGINT) is handler


def test_deadline_at_the_call_duration_either_returns_or_expires_and_restores_the_handler():
    """The race between the watchdog and the return: never a stray KeyboardInterrupt."""
    handler = signal.getsignal(signal.SIGINT)
    outcomes = set()
    for _ in range(40):
        try:
            outcomes.add(call_with_deadline(lambda: time.sleep(0.002) or "returned", 0.002))
        except Expired:
            outcomes.add("expired")
        assert signal.getsignal(signal.SIGINT) is handler
    assert outcomes <= {"returned", "expired"}


def test_ctrl_c_during_a_reward_is_still_a_keyboard_interrupt():
    """With Python's own SIGINT handler in place (as in ``trainer/run.py``'s process), a Ctrl-C
    during the reward reaches it. The test sets that handler and unblocks SIGINT itself: a
    pytest-xdist worker's signal state depends on what ran before in it."""

    def interrupted(prompts, completions, answers):
        signal.raise_signal(signal.SIGINT)
        return [1.0]

    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        with pytest.raises(KeyboardInterrupt):
            checked_rewards(interrupted, ["q"], ["c"], ["a"], timeout_s=30)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGINT, handler)


def test_a_reward_failing_on_one_completion_names_it_and_its_row():
    completions = ["Answer: 3", "Answer: 4", "Answer: four", "Answer: 7"]
    message = r"picky failed on completion 2 \(dataset row 12\) with answer '4': 'Answer: four': ValueError"
    with pytest.raises(ValueError, match=message):
        checked_rewards(picky, ["q"] * 4, completions, ["3", "4", "4", "7"], rows=[10, 11, 12, 13])


def test_non_binary_rewards_are_refused_only_where_binary_is_needed():
    args = (partial_credit, ["q", "q"], ["Answer: 2", "no idea"], ["2", "2"])
    assert checked_rewards(*args) == [1.0, 0.5]
    message = r"returned 0.5 for completion 1 with answer '2': 'no idea': .*rewards must be 0 or 1"
    with pytest.raises(ValueError, match=message):
        checked_rewards(*args, binary=True)


def test_vip_with_a_non_binary_reward_is_refused_at_the_pre_flight(tmp_path, capsys):
    data = f"dataset={_jsonl(tmp_path / 'd.jsonl', _sums())}"
    reward = "reward=tests.test_trainer_inputs:partial_credit"
    err = _refused(tmp_path, capsys, data, reward, "allocation=vip")
    assert "partial_credit returned 0.5 for completion 1 (dataset row 0)" in err and "rewards must be 0 or 1" in err


def test_a_hanging_reward_is_refused_at_the_pre_flight(tmp_path, capsys):
    err = _refused(tmp_path, capsys, "reward=tests.test_trainer_inputs:sleepy", "reward_timeout_s=0.5")
    assert "sleepy did not return within reward_timeout_s = 0.5 s" in err
