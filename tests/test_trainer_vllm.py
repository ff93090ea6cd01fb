"""The vLLM engine against tests/vllm_standin.py, a stand-in with vLLM 0.22-0.32's semantics per
version: sleep, wake-up and the scheduler, discarded weights, tied aliases, torch's cache, the
launcher's environment and the context length. The negative control drives the stand-in with
a call order that ignores those semantics, and it must fail there."""

import os
import sys

import numpy as np
import pytest
import torch

from tests import vllm_standin
from tests.conftest import tiny_config
from tests.vllm_standin import BLOCK_SIZE, VERSIONS, GarbageOutput, SamplingParams, StaleKV, WouldHang, standin
from trainer.config import load_config
from trainer.data import arithmetic_task
from trainer.distributed import launched_by_torchrun
from trainer.logprobs import completion_logprobs
from trainer.loop import Trainer
from trainer.models import tiny_model, tiny_tokenizer
from trainer.rewards import get_reward
from trainer.rollout import Sampling
from trainer.vllm_engine import VLLMEngine, make_llm, vllm_weights

LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _params(n, sampling):
    return SamplingParams(n=n, temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, logprobs=0)


def _model(tok, tied=True, seed=0):
    model = tiny_model("qwen2", len(tok), seed)
    if not tied:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    return model.eval()


def _engine(llm, tok, sleep=True, engine_class=VLLMEngine):
    return engine_class(
        llm, tok, "cpu", sleep=sleep, params=_params, empty_cache=lambda: llm.events.append("empty_cache")
    )


def _nudge(policy, step):
    """An optimizer step's worth of change, different every step."""
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * (step + 1))


def _samples_follow(policy, engine, batch):
    """The stand-in sampled from ``policy``: its log-probs equal the policy's own."""
    for (name, param), (_, held) in zip(vllm_weights(policy), engine.llm.model.named_parameters()):
        assert torch.equal(param, held), name
    with torch.no_grad():
        recomputed = completion_logprobs(policy, batch, 1.0)
    assert (recomputed - batch.old_logprobs).abs().max() < 1e-5


def training_flow(engine, policy, steps=3):
    """What the trainer does each step: sync, generate, then an optimizer update."""
    for step in range(steps):
        engine.sync_weights(policy)
        batch = engine.generate(["1+2=", "3+4="], [3, 2], Sampling(1.0, 3), torch.Generator())
        _samples_follow(policy, engine, batch)
        _nudge(policy, step)


def evaluation_flow(engine, policy, batches=3):
    """What evaluate.py does: one sync, then several batches."""
    engine.sync_weights(policy)
    for _ in range(batches):
        batch = engine.generate(["1+2=", "3+4="], [2, 2], Sampling(1.0, 3), torch.Generator())
        _samples_follow(policy, engine, batch)


FLOWS = {"training": training_flow, "evaluation": evaluation_flow}


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: "%d.%d" % v)
@pytest.mark.parametrize("sleep", [True, False], ids=["sleep", "awake"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_engine_meets_vllm_semantics_of_every_pinned_version(version, sleep, tied, flow):
    tok = tiny_tokenizer()
    policy = _model(tok, tied, seed=7)
    llm = standin(version, _model(tok, tied, seed=0))
    FLOWS[flow](_engine(llm, tok, sleep), policy)
    if sleep:
        assert llm.events[-1] == "sleep"  # vLLM gives its memory back after generating
        waking = [i for i, e in enumerate(llm.events) if e == "wake_up"]
        assert waking and all(llm.events[i - 1] == "empty_cache" for i in waking)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: "%d.%d" % v)
def test_an_evaluation_syncs_and_wakes_once_however_many_batches(version):
    """Inside ``generating()`` four batches take one sync (one prefix-cache reset), one wake-up
    of each tag and one sleep at the end; the control, the same batches outside it, re-syncs
    the weights that each batch's level-2 sleep discarded."""
    tok = tiny_tokenizer()
    policy = _model(tok, seed=7)
    held, control = standin(version, _model(tok)), standin(version, _model(tok))
    engine = _engine(held, tok)
    with engine.generating():
        evaluation_flow(engine, policy, batches=4)
    assert held.events.count("reset") == 1 and held.events.count("wake_up") == 2
    assert held.events.count("sleep") == 2 and held.events[-1] == "sleep"  # the engine's first sleep, and the last
    evaluation_flow(_engine(control, tok), policy, batches=4)
    assert control.events.count("reset") == 4


class SyncKeepingThePrefixCache(VLLMEngine):
    """The negative control: a sync that loads the weights but leaves vLLM's prefix cache."""

    def sync_weights(self, policy):
        self._wake("weights")
        model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in vllm_weights(policy):
            model.load_weights([(name, tensor)])
        self.policy, self.weights_current = policy, True


@pytest.mark.parametrize("engine_class", [VLLMEngine, SyncKeepingThePrefixCache], ids=["engine", "no-reset"])
def test_a_weight_sync_resets_the_prefix_cache(engine_class):
    """With vLLM awake (``vllm_sleep: false``, where no sleep empties the cache), the second step's
    prompt hits the blocks the first step cached: without the reset they hold the old weights' KV."""
    tok = tiny_tokenizer()
    prompt = "12+34+56+78+90+11+22+33+44="
    assert len(tok(prompt, add_special_tokens=False)["input_ids"]) > BLOCK_SIZE  # one full block is cached
    policy, llm = _model(tok, seed=7), standin((0, 31), _model(tok))
    engine = _engine(llm, tok, sleep=False, engine_class=engine_class)

    def two_steps():
        for step in range(2):
            engine.sync_weights(policy)
            batch = engine.generate([prompt], [2], Sampling(1.0, 3), torch.Generator())
            _samples_follow(policy, engine, batch)
            _nudge(policy, step)

    if engine_class is VLLMEngine:
        two_steps()
    else:
        with pytest.raises(StaleKV):
            two_steps()


class CallOrderThatIgnoresSleepSemantics(VLLMEngine):
    """The negative control: sleep right after every sync and every generation, wake only the
    tag the next call needs, load ``state_dict()`` (tied aliases included), and empty torch's
    cache only if ``empties_cache``. Correct only under a vLLM that does whatever it is told."""

    empties_cache = False

    def _wake_only(self, tag):
        if self.empties_cache:
            self.empty_cache()
        self.llm.wake_up(tags=[tag])

    def sync_weights(self, policy):
        self._wake_only("weights")
        model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, param in policy.state_dict().items():
            model.load_weights([(name, param.detach())])
        self.llm.reset_prefix_cache()
        self.llm.sleep(level=2)

    def generate(self, prompts, counts, sampling, generator):
        self._wake_only("kv_cache")
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        out = self.llm.generate(
            [{"prompt_token_ids": p} for p in ids], [self.params(c, sampling) for c in counts], use_tqdm=False
        )
        self.llm.sleep(level=2)
        return self._batch([(q, p, o) for q, (p, request) in enumerate(zip(ids, out)) for o in request.outputs])


class SameOrderEmptyingTheCache(CallOrderThatIgnoresSleepSemantics):
    empties_cache = True


def _control_failure(engine_class, version, tied, flow):
    tok = tiny_tokenizer()
    llm = standin(version, _model(tok, tied))
    try:
        FLOWS[flow](_engine(llm, tok, True, engine_class), _model(tok, tied, seed=7))
    except (WouldHang, GarbageOutput, ValueError, torch.OutOfMemoryError) as exc:
        return type(exc)
    return None


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: "%d.%d" % v)
def test_negative_control_the_naive_call_order_fails_the_standin(version):
    """Without emptying torch's cache, every wake-up before 0.27 runs out of memory. With it,
    the naive order still fails: training hangs on 0.31 (its sleep after the sync discards
    the weights, and waking kv_cache alone never resumes the scheduler) and raises on tied
    aliases from 0.29; evaluation's second batch hangs (0.24+) or runs on unmapped memory
    (0.22-0.23) in every version. 0.22-0.30 train only by accident."""
    naive, emptying = CallOrderThatIgnoresSleepSemantics, SameOrderEmptyingTheCache
    for tied in (False, True):
        for flow in FLOWS:
            assert _control_failure(naive, version, tied, flow) is (
                torch.OutOfMemoryError if version < (0, 27) else _control_failure(emptying, version, tied, flow)
            )
    hang_or_garbage = WouldHang if version >= (0, 24) else GarbageOutput
    assert _control_failure(emptying, version, False, "training") is (WouldHang if version >= (0, 31) else None)
    assert _control_failure(emptying, version, True, "training") is (ValueError if version >= (0, 29) else None)
    assert _control_failure(emptying, version, False, "evaluation") is hang_or_garbage
    assert _control_failure(emptying, version, True, "evaluation") is (
        ValueError if version >= (0, 29) else hang_or_garbage
    )


def test_generate_before_any_sync_is_refused_when_the_weights_were_discarded():
    tok = tiny_tokenizer()
    engine = _engine(standin((0, 31), _model(tok)), tok)
    with pytest.raises(RuntimeError, match="call sync_weights"):
        engine.generate(["1+2="], [2], Sampling(1.0, 2), torch.Generator())


def test_counts_per_prompt():
    tok = tiny_tokenizer()
    engine = _engine(standin((0, 31), _model(tok)), tok)
    engine.sync_weights(_model(tok))
    prompts = ["1+2=", "3+3=", "0+4="]
    batch = engine.generate(prompts, [3, 0, 2], Sampling(1.0, 3), torch.Generator())
    assert batch.prompt_index == [0, 0, 0, 2, 2]
    mask = batch.completion_mask
    assert mask[:, 0].all() and not (mask[:, 1:] & ~mask[:, :-1]).any()
    texts = tok.batch_decode(batch.sequences[:, : batch.prompt_length], skip_special_tokens=True)
    assert texts == ["1+2="] * 3 + ["0+4="] * 2
    with pytest.raises(ValueError, match="allocate at least one rollout"):
        engine.generate(prompts, [0, 0, 0], Sampling(), torch.Generator())


def test_weights_are_sent_once_under_the_owner_name_without_wrapper_prefixes():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    tok = tiny_tokenizer()
    tied, untied = _model(tok, True), _model(tok, False)
    assert "lm_head.weight" in tied.state_dict() and "lm_head.weight" not in dict(vllm_weights(tied))
    assert "lm_head.weight" in dict(vllm_weights(untied))
    wrapped = _model(tok, True, seed=3)
    wrapped.model.layers[0] = checkpoint_wrapper(wrapped.model.layers[0])
    assert any("_checkpoint_wrapped_module" in n for n, _ in wrapped.named_parameters())
    assert [n for n, _ in vllm_weights(wrapped)] == [n for n, _ in vllm_weights(tied)]
    llm = standin((0, 31), tied)
    engine = _engine(llm, tok)
    engine.sync_weights(wrapped)  # loads into vLLM's names
    assert torch.equal(llm.model.model.layers[0].mlp.up_proj.weight, wrapped.model.layers[0].mlp.up_proj.weight)


def test_prompts_that_leave_no_room_for_the_completion_are_refused_with_both_numbers():
    """vLLM cuts a completion at max_model_len without a word; the engine refuses first."""
    tok = tiny_tokenizer()
    llm = standin((0, 31), _model(tok), max_model_len=12)
    engine = _engine(llm, tok, sleep=False)
    with pytest.raises(
        ValueError,
        match=r"prompt 1 has 8 tokens; with max_new_tokens = 6 it needs 14 tokens, "
        r"more than vLLM's max_model_len .* = 12",
    ):
        engine.check_prompt_lengths(["1+2=", "12+34567"], 6)
    engine.check_prompt_lengths(["1+2=", "12+34567"], 4)
    # what the check prevents: the stand-in, like vLLM, cuts the completion silently
    model, eos = _model(tok), torch.tensor([tok.eos_token_id])
    model.lm_head.register_forward_hook(
        lambda module, args, logits: logits.index_fill(-1, eos, -1e9)
    )  # never ends by itself
    long = _engine(standin((0, 31), model, max_model_len=12), tok, sleep=False)
    batch = long.generate(["12+34567"], [2], Sampling(1.0, 6), torch.Generator())
    assert batch.completion_mask.sum(1).tolist() == [4, 4]


def test_the_trainer_refuses_a_config_whose_prompts_do_not_fit_vllm_context():
    tok = tiny_tokenizer()
    config = _config(steps=1, max_new_tokens=20)
    llm = standin((0, 31), _model(tok), max_model_len=16)
    with pytest.raises(ValueError, match="more than vLLM's max_model_len"):
        Trainer(
            config,
            _model(tok),
            tok,
            arithmetic_task(8, np.random.default_rng(0)),
            get_reward("first_number"),
            engine=_engine(llm, tok),
        )


def test_make_llm_sets_the_launcher_variables_only_while_vllm_builds(monkeypatch):
    """A single process gets RANK ... MASTER_PORT (a free port) while the LLM is built, and
    none of them afterwards, so the trainer does not think torchrun launched it."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "vllm", vllm_standin.module((0, 31)))
    tok = tiny_tokenizer()
    built = []
    monkeypatch.setattr(vllm_standin.LLM, "__init__", lambda self, **kw: built.append(dict(os.environ)))
    make_llm("some/model", 0, 0.3, None, True)
    seen = built[0]
    assert (seen["RANK"], seen["LOCAL_RANK"], seen["WORLD_SIZE"]) == ("0", "0", "1") and int(seen["MASTER_PORT"]) > 0
    assert not any(name in os.environ for name in LAUNCHER_VARIABLES) and not launched_by_torchrun()
    del tok


def test_make_llm_leaves_torchrun_variables_alone(monkeypatch):
    torchrun = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29500"}
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "vllm", vllm_standin.module((0, 31)))
    built = []
    monkeypatch.setattr(
        vllm_standin.LLM, "__init__", lambda self, **kw: built.append({n: os.environ[n] for n in torchrun})
    )
    make_llm("some/model", 0, 0.3, None, True)
    assert built == [torchrun] and {n: os.environ[n] for n in torchrun} == torchrun


def _config(**overrides):
    sizes = dict(prompts_per_step=8, budget=64, min_rollouts=4, max_rollouts=16, max_new_tokens=2, steps=150)
    return tiny_config(**(sizes | dict(learning_rate=0.002, micro_batch_size=64) | overrides))


def _train(engine, steps=150):
    tok = tiny_tokenizer()
    policy = tiny_model("qwen2", len(tok))
    trainer = Trainer(
        _config(steps=steps),
        policy,
        tok,
        arithmetic_task(64, np.random.default_rng(0)),
        get_reward("first_number"),
        engine=engine(tok, policy),
    )
    rewards = np.array([trainer.train_step()[0]["reward/mean"] for _ in range(steps)])
    return rewards[:30].mean(), rewards[-30:].mean(), trainer


def test_training_through_the_engine_learns_and_needs_the_weight_sync():
    """With the sync, sampling follows the policy and the reward rises as with transformers;
    negative control: an engine that never syncs keeps sampling the initial model, and the
    reward stays where it started."""
    first, last, trainer = _train(lambda tok, policy: _engine(standin((0, 31), policy), tok))
    assert last > first + 0.08, f"{first:.3f} -> {last:.3f}"
    assert trainer.engine.llm.events.count("load") >= 150

    class NoSync(VLLMEngine):
        def sync_weights(self, policy):
            pass

    first, last, _ = _train(
        lambda tok, policy: _engine(standin((0, 31), policy), tok, sleep=False, engine_class=NoSync)
    )
    assert abs(last - first) < 0.05, f"{first:.3f} -> {last:.3f}"


def test_without_vllm_the_engine_says_which_extra_before_any_model_loads(monkeypatch):
    import trainer.run

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[trainer,gpu\]"'):
        make_llm("some/model", 0, 0.3, None, True)
    monkeypatch.setattr(trainer.run, "load_tokenizer", lambda name: pytest.fail("a model was loaded"))
    with pytest.raises(ImportError, match=r"needs the gpu extra"):
        trainer.run.build_trainer(_config(model="some/model", rollout_engine="vllm"))


def test_vllm_config_refusals():
    with pytest.raises(ValueError, match="needs recompute_old_logprobs=true"):
        load_config(None, ["rollout_engine=vllm", "model=Qwen/Qwen2.5-Math-1.5B", "recompute_old_logprobs=false"])
    with pytest.raises(ValueError, match="not a tiny: model"):
        load_config(None, ["rollout_engine=vllm"])
    for name, bad in (("vllm_max_num_batched_tokens", 0), ("vllm_max_model_len", -1)):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            load_config(None, ["rollout_engine=vllm", "model=Qwen/Qwen2.5-Math-1.5B", f"{name}={bad}"])


def test_the_config_sets_vllm_max_num_batched_tokens(monkeypatch):
    """vLLM's default depends on the card (16384 on H100/H200, 8192 elsewhere): the engine
    always passes the config's."""
    from trainer import vllm_engine

    monkeypatch.setitem(sys.modules, "vllm", vllm_standin.module((0, 32)))
    built = []
    monkeypatch.setattr(vllm_standin.LLM, "__init__", lambda self, **kw: built.append(kw))
    monkeypatch.setattr(vllm_engine, "VLLMEngine", lambda llm, *args: llm)
    config = load_config(
        None, ["rollout_engine=vllm", "model=Qwen/Qwen2.5-Math-1.5B", "vllm_max_num_batched_tokens=4096"]
    )
    vllm_engine.colocated_engine(config, tiny_tokenizer(), "cpu")
    assert built[0]["max_num_batched_tokens"] == 4096
    make_llm("some/model", 0, 0.3, None, True)
    assert built[1]["max_num_batched_tokens"] == load_config(None, []).vllm_max_num_batched_tokens == 16384


def _fake_vllm(monkeypatch, version, built):
    """``vllm`` replaced by the stand-in of ``version``; ``built`` collects each LLM built.
    ``torch.cuda.empty_cache`` (a no-op without CUDA) is recorded where the stand-in sees it."""
    fake = vllm_standin.module(version)

    class Counting(fake.LLM):
        def __init__(self, **kwargs):
            built.append(self)
            super().__init__(**kwargs)

    fake.LLM = Counting
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: [llm.events.append("empty_cache") for llm in built])


@pytest.mark.parametrize("version", [(0, 22), (0, 24), (0, 31)], ids=lambda v: "%d.%d" % v)
def test_evaluate_samples_every_batch_through_vllm(tmp_path, monkeypatch, version):
    """evaluate.py with rollout_engine=vllm over three batches (the second hung on a naive
    engine from 0.24 and ran on unmapped memory before)."""
    from trainer.evaluate import evaluate

    tok = tiny_tokenizer()
    policy = _model(tok, seed=5)
    policy.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    built = []
    _fake_vllm(monkeypatch, version, built)
    config = _config(model=str(tmp_path / "model"), rollout_engine="vllm", max_new_tokens=3)
    result = evaluate(
        config, arithmetic_task(12, np.random.default_rng(0)), policy, tok, n=2, ks=[1, 2], prompts_per_batch=4
    )
    assert result["problems"] == 12 and 0 <= result["pass@2"] <= 1 and len(built) == 1
    assert built[0].events.count("reset") == 1  # one weight sync for the three batches


def test_gpu_smoke_script_builds_one_vllm_engine(monkeypatch, capsys):
    import json
    import runpy

    from tests.conftest import ROOT

    built = []
    _fake_vllm(monkeypatch, (0, 31), built)
    smoke = runpy.run_path(str(ROOT / "scripts" / "gpu_smoke.py"))
    args = [
        "--device",
        "cpu",
        "--engine",
        "vllm",
        "--steps",
        "4",
        "--prompts",
        "4",
        "--new-tokens",
        "4",
        "--hidden",
        "64",
        "--layers",
        "2",
    ]
    assert smoke["main"](args) == 0, capsys.readouterr().out
    assert len(built) == 1 and json.loads(capsys.readouterr().out)["failures"] == []
