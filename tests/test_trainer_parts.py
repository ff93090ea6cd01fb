"""trainer's small parts: rewards, data, metrics, advantages, allocation, rollout, checkpoints."""

import json
import math
from itertools import combinations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from theory.predictor import GP_PRESETS
from theory.predictors import PREDICTORS
from theory.variance import group_advantages
from trainer import rewards
from trainer.advantages import rollout_advantages, zero_variance_fraction
from trainer.allocation import RolloutAllocator
from trainer.checkpoint import ResumeError, latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import VIP_MATH_TEMPLATE, arithmetic_task, format_prompt, load_examples
from trainer.logprobs import completion_logprobs
from trainer.logs import apply_resume_plan, read_jsonl, resume_plan
from trainer.loop import Trainer
from trainer.metrics import maj_at_k, pass_at_k, summarise
from trainer.models import tiny_model, tiny_tokenizer
from trainer.rollout import Sampling, TransformersEngine

# --- rewards ----------------------------------------------------------------------------------


def test_answer_line_takes_the_last_answer_line():
    text = "Answer: 3 is wrong\nso\nAnswer: 7\n"
    assert rewards.answer_line(text) == "7"
    assert rewards.answer_line("no answer here") is None


def test_boxed_balances_braces():
    assert rewards.boxed(r"so \boxed{1} then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert rewards.boxed(r"\boxed{unclosed") is None


@pytest.mark.parametrize(
    "pred, gold, same",
    [
        ("7", "7", True),
        (" 7. ", "7", True),
        ("1,000", "1000", True),
        ("7.0", "7", True),
        ("$7$", "7", True),
        ("8", "7", False),
        (None, "7", False),
        ("1234567890123456", "1234567890123457", False),
        ("-12", "-12.0", True),
    ],
)
def test_same_answer(pred, gold, same):
    assert rewards.same_answer(pred, gold) is same


def test_built_in_rewards_and_convention():
    fn = rewards.get_reward("answer_line")
    values = fn(["q"] * 3, ["x\nAnswer: 4", "Answer: 5", "none"], ["4", "4", "4"])
    assert values == [1.0, 0.0, 0.0]
    assert rewards.scaled(values, "signed") == [1.0, -1.0, -1.0]
    assert rewards.get_reward("first_number")(["q"], ["12 then 3"], ["12"]) == [1.0]
    assert rewards.get_reward("math_verify")(["q"], [r"so \boxed{\frac{1}{2}}"], ["0.5"]) == [1.0]
    assert rewards.get_reward("boxed")(["q"], [r"\boxed{0.5}"], ["1/2"]) == [0.0]  # string/number match only


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda p, c, a: [1.0], "returned 1 rewards for 2 completions"),
        (lambda p, c, a: [1.0, math.nan], "returned nan for completion 1 .*must be finite"),
        (lambda p, c, a: ["x", 1], "returned 'x' for completion 0 .*must be numbers"),
        (lambda p, c, a: "10", "must return a list of numbers"),
    ],
)
def test_checked_rewards_refuses(bad, message):
    with pytest.raises(ValueError, match=message):
        rewards.checked_rewards(bad, ["a", "b"], ["1", "2"], ["1", "2"])


# --- data -------------------------------------------------------------------------------------


def test_vip_template_and_plain():
    assert "current question: What is 2+2?" in format_prompt("What is 2+2?", "vip_math")
    assert VIP_MATH_TEMPLATE.count("{question}") == 1
    assert format_prompt("2+2=", "plain") == "2+2="


# ChatML with a default system message, as SmolLM2-135M-Instruct's template has it
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chat_prompts_with_a_system_prompt_choice_and_a_prefill():
    tok = tiny_tokenizer()
    tok.chat_template = CHATML
    user = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt("What is 2 + 3?", "plain", tok) == "<|im_start|>system\nYou are helpful.<|im_end|>\n" + user
    none = format_prompt("What is 2 + 3?", "plain", tok, system_prompt="none", prefill="2 + 3 =")
    assert none == "<|im_start|>system\n<|im_end|>\n" + user + "2 + 3 ="
    own = format_prompt("What is 2 + 3?", "plain", tok, system_prompt="Be brief.")
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert format_prompt("2+2=", "plain", tok, chat_template=False, prefill=" x") == "2+2= x"


def test_mixed_arithmetic_spreads_five_families_with_right_answers():
    examples = load_examples("synthetic:mixed_arithmetic", max_prompts=50, rng=np.random.default_rng(3))
    assert len(examples) == 50 and [e.prompt_id for e in examples] == list(range(50))
    signs = [e.prefill.split()[1] for e in examples]
    assert signs[:5] == ["+", "-", "*", "+", "*"] and signs.count("*") == 20
    for e in examples:
        a, sign, b, equals = e.prefill.split()
        assert equals == "=" and e.question == f"What is {a} {sign} {b}?"
        assert int(e.answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[sign]
    again = load_examples("synthetic:mixed_arithmetic", max_prompts=50, rng=np.random.default_rng(3))
    other = load_examples("synthetic:mixed_arithmetic", max_prompts=50, rng=np.random.default_rng(4))
    assert again == examples and other != examples
    with pytest.raises(ValueError, match="synthetic task of dataset synthetic:<task> must be one of arithmetic, mix"):
        load_examples("synthetic:algebra")


def test_arithmetic_task_answers_are_sums():
    examples = arithmetic_task(20, np.random.default_rng(1))
    assert all(int(e.answer) == sum(map(int, e.question.rstrip("=").split("+"))) for e in examples)


def test_local_jsonl_with_nested_columns_and_chat_prompts(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"prompt": [{"role": "user", "content": "1+1?"}], "reward_model": {"ground_truth": "2"}}\n'
        '{"prompt": "2+2?", "reward_model": {"ground_truth": "4"}}\n'
    )
    examples = load_examples(str(path), answer_column="reward_model.ground_truth")
    assert [(e.question, e.answer) for e in examples] == [("1+1?", "2"), ("2+2?", "4")]
    with pytest.raises(KeyError, match="column 'solution' not found"):
        load_examples(str(path), answer_column="solution")


def test_local_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["3+4=", "1+1="], "answer": ["7", "2"]}), path)
    assert [(e.prompt_id, e.question, e.answer) for e in load_examples(str(path))] == [
        (0, "3+4=", "7"),
        (1, "1+1=", "2"),
    ]


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "bool.jsonl",
            '{"prompt": "1+1=", "answer": true}\n',
            r"row 0: the answer \('answer'\) must be text or a number; got bool",
        ),
        ("list.jsonl", '{"prompt": "1+1=", "answer": [1, 2]}\n', "must be text or a number; got list"),
        (
            "conflict.jsonl",
            '{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": "4"}\n{"prompt": "1+1=", "answer": "3"}\n',
            "rows 0 and 2 hold the same prompt with different answers",
        ),
        (
            "latin1.jsonl",
            b'{"prompt": "1+1=", "answer": "2"}\n{"prompt": "caf\xe9", "answer": "1"}\n',
            r"latin1.jsonl line 2: byte 16 is not UTF-8",
        ),
        ("broken.jsonl", '{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", \n', "broken.jsonl line 2: not JSON"),
        ("arrays.jsonl", '["1+1=", "2"]\n', "line 1: a JSON list; each line must be one object"),
        ("data.txt", "1+1=,2\n", "a .txt file; use .jsonl, .json, .csv, .parquet"),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value and len(value) < 20 else "",
)
def test_a_bad_dataset_is_refused_naming_the_file_and_row(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message):
        load_examples(str(path))


def test_csv_datasets_and_numeric_answers_load(tmp_path):
    """The control of the refusals above: a .csv file, a number as the answer, and an identical
    duplicate row are accepted."""
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer\n1+1=,2\n2+2=,4\n1+1=,2\n")
    assert [(e.question, e.answer) for e in load_examples(str(path))] == [("1+1=", "2"), ("2+2=", "4"), ("1+1=", "2")]
    json_path = tmp_path / "d.jsonl"
    json_path.write_text('{"prompt": "1+1=", "answer": 2}\n{"prompt": "3+4=", "answer": 7}\n')
    assert [e.answer for e in load_examples(str(json_path))] == ["2", "7"]


# --- metrics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n, c, k", [(8, 3, 1), (8, 3, 4), (10, 0, 5), (6, 6, 2), (7, 2, 6)])
def test_pass_at_k_is_the_exact_subset_probability(n, c, k):
    """The unbiased estimator equals the fraction of k-subsets holding a correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(np.mean([any(s) for s in subsets]), abs=1e-12)


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_maj_and_summary():
    assert maj_at_k(["3", "4", "4", None], [0, 1, 1, 0]) == 1.0
    assert maj_at_k(["3", "4", "3", "4"], [1, 0, 1, 0]) == 1.0  # tie: the answer seen first
    assert maj_at_k([None, None], [0, 0]) == 0.0
    out = summarise([np.array([1, 0, 0, 0])], [["1", "2", "2", "3"]], [1, 4])
    assert out == {"pass@1": 0.25, "mean@1": 1.0, "maj@1": 1.0, "pass@4": 1.0, "mean@4": 0.25, "maj@4": 0.0}


# --- advantages -------------------------------------------------------------------------------


def test_unequal_groups_match_theory_group_by_group():
    rng = np.random.default_rng(0)
    sizes = [3, 5, 3, 8]
    index = np.repeat(np.arange(4), sizes)
    rng.shuffle(index)
    r = rng.integers(0, 2, size=index.size).astype(float)
    for name in ("dr_grpo", "rloo"):
        adv = rollout_advantages(r, index, name)
        for q in range(4):
            np.testing.assert_allclose(adv[index == q], group_advantages(r[index == q], name))
    grpo = rollout_advantages(r, index, "grpo")
    for q in range(4):
        g = r[index == q]
        expected = (g - g.mean()) / (g.std(ddof=1) + 1e-6)
        np.testing.assert_allclose(grpo[index == q], expected)


def test_zero_variance_fraction():
    assert zero_variance_fraction([1, 1, 0, 1, 0, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(2 / 3)


# --- allocation -------------------------------------------------------------------------------


@pytest.mark.parametrize("predictor", ["gp_binomial", "gp", "ridge"])
def test_vip_allocator_gives_more_to_uncertain_prompts_after_learning(predictor):
    texts = [f"problem {i} about {'easy' if i < 4 else 'hard'} things" for i in range(8)]
    alloc = RolloutAllocator(
        "vip", texts, 48, 3, 12, "rloo", embedding="hashed", rng=np.random.default_rng(0), predictor=predictor
    )
    counts, p_hat = alloc.allocate(np.arange(8))
    assert counts.sum() == 48 and np.all(p_hat == 0.5)
    for _ in range(2):  # two steps: the binomial-noise GP moves part of the way to each observation
        alloc.observe(np.arange(8), [np.ones(6)] * 4 + [np.array([1.0, 0, 1, 0, 1, 0])] * 4)
    counts, p_hat = alloc.allocate(np.arange(8))
    assert counts.sum() == 48 and counts[4:].min() > counts[:4].max()
    assert p_hat[:4].min() > p_hat[4:].max()  # the easy prompts are predicted easier
    state = alloc.state_dict()
    fresh = RolloutAllocator("vip", texts, 48, 3, 12, "rloo", embedding="hashed", predictor=predictor)
    assert np.all(fresh.allocate(np.arange(8))[1] == 0.5)  # negative control: an unloaded predictor knows nothing
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.allocate(np.arange(8))[0], counts)


@pytest.mark.parametrize("predictor, near_singular", [("gp_binomial", False), ("gp", True)])
def test_allocator_metrics_report_the_gp_fit(predictor, near_singular):
    """Two problems with identical hashed features and opposite outcomes: the paper's noiseless
    GP (``gp``) factorises a near-singular K_BB (condition ~1/jitter), the default binomial-noise
    GP a well-conditioned one; metrics() carries the predictor's record into the step's metrics."""
    texts = ["What is 2 + 3?", "What is 3 + 2?"] + [f"problem {i} about {w}" for i, w in enumerate("abcdef")]
    alloc = RolloutAllocator("vip", texts, 48, 3, 12, "rloo", embedding="hashed", predictor=predictor)
    assert alloc.metrics() == {}  # nothing fitted yet
    alloc.observe(np.arange(8), [np.ones(6), np.zeros(6)] + [np.array([1.0, 0, 1, 0, 1, 0])] * 6)
    gp = alloc.predictor
    assert alloc.metrics() == {
        "predictor/condition_number": gp.condition_number,
        "predictor/amplification": gp.amplification,
        "predictor/ill_conditioned_fits": gp.ill_conditioned_fits,
    }
    assert (gp.condition_number > 1e5) == near_singular
    default = RolloutAllocator("vip", texts, 48, 3, 12, "rloo", embedding="hashed")
    assert default.predictor.observation_noise == "binomial"
    assert TrainConfig().predictor == "gp_binomial"
    assert RolloutAllocator("vip", texts, 48, 3, 12, "rloo", embedding="hashed", predictor="ridge").metrics() == {}


def test_a_tiny_run_uses_the_released_gp_and_checkpoints_it():
    """predictor=gp_released in a tiny run: the run's GP has the released settings, its first
    p_hat is sigmoid(-5) (the released prior), the step's rewards move it, and the trainer's
    state carries it: an allocator loaded from it predicts as the run's; negative control: the
    same allocator before loading does not."""
    tok = tiny_tokenizer()
    sizes = dict(prompts_per_step=4, budget=16, min_rollouts=3, max_rollouts=8, max_new_tokens=2)
    config = tiny_config(**sizes, micro_batch_size=8, allocation="vip", predictor="gp_released")
    config.validate()
    task = arithmetic_task(16, np.random.default_rng(0))
    trainer = Trainer(config, tiny_model("qwen2", len(tok)), tok, task, rewards.get_reward("first_number"))
    gp = trainer.allocator.predictor
    assert {k: getattr(gp, k) for k in GP_PRESETS["released"]} == GP_PRESETS["released"]
    _, rows = trainer.train_step()
    assert [r["p_hat"] for r in rows] == pytest.approx([1 / (1 + math.exp(5))] * len(rows))
    assert np.any(gp.mean != -5.0)  # the step's rewards moved the posterior
    texts = [e.question for e in task]
    restored = RolloutAllocator("vip", texts, 16, 3, 8, "rloo", embedding="hashed", predictor="gp_released")
    everything = np.arange(len(texts))
    assert not np.array_equal(restored.predictor.predict(everything), gp.predict(everything))
    restored.load_state_dict(trainer.state_dict()["allocator"])
    np.testing.assert_array_equal(restored.predictor.predict(everything), gp.predict(everything))


def test_allocator_rejects_an_unknown_predictor():
    names = ", ".join(PREDICTORS)
    assert names.startswith("gp_binomial, gp, gp_released") and "reward_buffer" in names
    with pytest.raises(ValueError, match=f"predictor must be one of {names}; got 'lasso'"):
        RolloutAllocator("vip", ["a", "b"], 8, 3, 5, "rloo", embedding="hashed", predictor="lasso")


# --- rollout ----------------------------------------------------------------------------------


def test_engine_honours_counts_and_its_logprobs_match_a_forward_pass():
    tok = tiny_tokenizer()
    model = tiny_model("qwen2", len(tok)).eval()
    engine = TransformersEngine(model, tok, batch_size=3)
    batch = engine.generate(["1+2=", "33+4=", "0+0="], [2, 0, 5], Sampling(1.0, 4), torch.Generator().manual_seed(0))
    assert batch.prompt_index == [0, 0, 2, 2, 2, 2, 2]
    mask = batch.completion_mask
    assert mask[:, 0].all() and not (mask[:, 1:] & ~mask[:, :-1]).any()
    with torch.no_grad():
        recomputed = completion_logprobs(model, batch, 1.0)
    assert (recomputed - batch.old_logprobs).abs().max() < 1e-5
    again = engine.generate(["1+2=", "33+4=", "0+0="], [2, 0, 5], Sampling(1.0, 4), torch.Generator().manual_seed(0))
    assert torch.equal(again.sequences, batch.sequences)
    with pytest.raises(ValueError, match="counts must hold one non-negative integer per prompt"):
        engine.generate(["a"], [1, 2], Sampling(), torch.Generator())


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, {"step": step, "x": torch.arange(3)}, keep=2)
    (tmp_path / "checkpoints" / "step-40.tmp").mkdir()  # what a kill during a save leaves
    assert latest_checkpoint(tmp_path).name == "step-30"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-20", "step-30", "step-40.tmp"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 30
    assert latest_checkpoint(tmp_path / "nothing") is None


def _write_logs(folder, steps, per_step=2):
    """metrics.jsonl with one row per step of ``steps`` (each counting ``per_step`` rollouts) and
    rollouts.jsonl with ``per_step`` rows per step."""
    metrics = [{"step": s, "allocation/histogram": {str(per_step): 1}} for s in steps]
    rollouts = [{"step": s, "rollout": j} for s in steps for j in range(per_step)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (folder / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))


def test_a_resume_drops_later_steps_and_a_half_written_row_and_keeps_the_old_logs(tmp_path):
    _write_logs(tmp_path, [1, 2, 3])
    with (tmp_path / "rollouts.jsonl").open("a") as handle:
        handle.write('{"step": 4, "r"')  # a run killed in the middle of a write
    before = {name: (tmp_path / name).read_text() for name in ("metrics.jsonl", "rollouts.jsonl")}
    plan = resume_plan(tmp_path, 2)
    assert {name: (tmp_path / name).read_text() for name in before} == before  # a plan changes nothing
    moved = apply_resume_plan(tmp_path, plan)
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert [row["step"] for row in read_jsonl(tmp_path / "rollouts.jsonl")] == [1, 1, 2, 2]
    assert sorted(p.read_text() for p in moved) == sorted(before.values())  # nothing dropped without a copy
    assert apply_resume_plan(tmp_path, resume_plan(tmp_path, 2)) == []  # nothing to drop: nothing rewritten


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda m, r: m.write_text(m.read_text()[:-5]), r"has no row of step 3 \(its last line is cut short\)"),
        (
            lambda m, r: m.write_text(m.read_text().replace('"step": 2', '"step": 1')),
            "no row of step 2 and step 1 more",
        ),
        (lambda m, r: m.write_text(m.read_text().replace('{"step": 2', 'x{"step": 2')), "line 2 is not a JSON row"),
        (lambda m, r: m.write_text(m.read_text().replace('"step": 2', '"step": true')), "line 2 has no step"),
        (lambda m, r: r.write_text(r.read_text().replace('{"step": 2, "rollout": 1}\n', "")), "holds 1 rows of step 2"),
        (lambda m, r: r.unlink(), "holds 0 rows of step 1"),
        (lambda m, r: m.unlink(), "metrics.jsonl is missing"),
    ],
    ids=["cut-row", "repeated-step", "corrupt-line", "bool-step", "missing-rollout", "no-rollouts", "no-metrics"],
)
def test_a_resume_refuses_logs_that_do_not_reach_the_checkpoint(tmp_path, spoil, message):
    _write_logs(tmp_path, [1, 2, 3])
    spoil(tmp_path / "metrics.jsonl", tmp_path / "rollouts.jsonl")
    with pytest.raises(ResumeError, match=message):
        resume_plan(tmp_path, 3)


def test_logs_that_reach_the_checkpoint_pass_the_resume_check(tmp_path):
    """The negative control of the refusals above: the same logs unspoiled."""
    _write_logs(tmp_path, [1, 2, 3])
    assert resume_plan(tmp_path, 3).dropped == {"metrics.jsonl": 0, "rollouts.jsonl": 0}


def test_transformers_engine_refuses_prompts_past_the_model_context():
    """The tiny model has 256 positions: a 250-character prompt leaves no room for 10 tokens."""
    tok = tiny_tokenizer()
    engine = TransformersEngine(tiny_model("qwen2", len(tok)), tok)
    engine.check_prompt_lengths(["1+2=", "9" * 240], 10)
    with pytest.raises(
        ValueError,
        match=r"prompt 1 has 250 tokens; with max_new_tokens = 10 it needs 260 tokens, "
        r"more than the model's context \(max_position_embeddings\) = 256",
    ):
        engine.check_prompt_lengths(["1+2=", "9" * 250], 10)
