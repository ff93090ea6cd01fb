"""The transformers rollout engine: one prefill per prompt shared by its rollouts, the KV cache
passed by the name the model's forward takes, the vocabulary head on completion positions only,
and CPU bfloat16 compute (trainer.precision)."""

from __future__ import annotations

import inspect

import pytest
import torch

from trainer import logprobs, precision
from trainer.config import TrainConfig
from trainer.logprobs import completion_logprobs
from trainer.models import enable_activation_checkpointing, tiny_model, tiny_tokenizer
from trainer.precision import compute_context, compute_dtype, logprob_gap
from trainer.rollout import Sampling, TransformersEngine

PROMPTS = ["1+2=", "33+4=", "0+0=", "12+9="]
COUNTS = [3, 0, 5, 2]


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    return tiny_model("qwen2", len(tok)).eval(), tok


class PrefillCounter:
    """Counts the prompt rows the model's forward passes prefill (calls with more than one
    input position)."""

    def __init__(self, model):
        self.rows = 0
        model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1:
            self.rows += ids.shape[0]


class OldCacheApi(torch.nn.Module):
    """A model whose forward takes the cache as ``past_key_values`` and returns it under that
    name (transformers before 5.x), with no ``logits_to_keep``; records the keywords it gets."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.seen = model, model.config, []

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        self.seen.append({"past_key_values"} if past_key_values is not None else set())
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,
            use_cache=use_cache,
        )
        return type("Output", (), {"logits": out.logits, "past_key_values": out.cache})()


def _generate(model, tok, share: bool, batch_size: int = 4, seed: int = 0):
    engine = TransformersEngine(model, tok, batch_size=batch_size, share_prompt_cache=share)
    return engine.generate(PROMPTS, COUNTS, Sampling(1.0, 5), torch.Generator().manual_seed(seed))


def test_shared_prefill_gives_the_unshared_engines_samples_and_logprobs(tiny):
    """Counts 3, 0, 5, 2 in chunks of 4 split prompt 2's rollouts over two chunks: the samples are
    those of the engine that prefills every rollout (same generator stream), the log-probs
    agree to float32 rounding and with a forward pass over the finished sequences."""
    model, tok = tiny
    shared, alone = _generate(model, tok, True), _generate(model, tok, False)
    assert shared.prompt_index == alone.prompt_index == [0, 0, 0, 2, 2, 2, 2, 2, 3, 3]
    assert torch.equal(shared.sequences, alone.sequences)
    assert torch.equal(shared.completion_mask, alone.completion_mask)
    assert (shared.old_logprobs - alone.old_logprobs).abs().max() < 1e-5
    with torch.no_grad():
        recomputed = completion_logprobs(model, shared, 1.0)
    assert (recomputed - shared.old_logprobs).abs().max() < 1e-5
    other_seed = _generate(model, tok, True, seed=1)  # control: the comparison can tell samples apart
    assert not torch.equal(other_seed.sequences, shared.sequences)


def test_each_prompt_is_prefilled_once_per_chunk(tiny):
    model, tok = tiny
    counter = PrefillCounter(model)
    _generate(model, tok, True, batch_size=64)
    assert counter.rows == 3  # prompts 0, 2 and 3; prompt 1 has no rollouts
    counter.rows = 0
    _generate(model, tok, True, batch_size=4)  # chunks {0,0,0,2} {2,2,2,2} {3,3}: prompt 2 twice
    assert counter.rows == 4
    counter.rows = 0
    _generate(model, tok, False, batch_size=64)  # control: one prefill per rollout
    assert counter.rows == sum(COUNTS)


def test_the_cache_goes_by_the_name_the_forward_takes(tiny):
    """transformers 5.x: ``cache`` (``past_key_values`` warns on every call and goes in 5.40);
    a forward that only knows ``past_key_values`` gets that, with the same samples."""
    model, tok = tiny
    assert "cache" in inspect.signature(model.forward).parameters
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: calls.append(set(kw)), with_kwargs=True)
    current = _generate(model, tok, True)
    hook.remove()
    assert all("past_key_values" not in kw for kw in calls) and any("cache" in kw for kw in calls)
    old_api = OldCacheApi(model)
    legacy = _generate(old_api, tok, True)
    assert any(old_api.seen) and torch.equal(legacy.sequences, current.sequences)
    assert (legacy.old_logprobs - current.old_logprobs).abs().max() < 1e-5


def test_completion_logprobs_project_only_completion_positions(tiny):
    """``logits_to_keep`` gives the full forward's log-probs; a model without it still works."""
    model, tok = tiny
    batch = _generate(model, tok, True)
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw.get("logits_to_keep")), with_kwargs=True)
    with torch.no_grad():
        kept = completion_logprobs(model, batch, 0.7, share_prompts=False)
        full = completion_logprobs(OldCacheApi(model), batch, 0.7, share_prompts=False)
    hook.remove()
    assert calls[0] == batch.completion_mask.shape[1] + 1
    assert (kept - full).abs().max() < 1e-5 and full.abs().sum() > 0


def test_cpu_bf16_modes():
    cpu = torch.device("cpu")
    assert compute_dtype(cpu, "off") == torch.float32
    assert compute_dtype(cpu, "on") == torch.bfloat16
    assert compute_dtype(torch.device("cuda"), "off") == torch.bfloat16
    with pytest.raises(ValueError, match="cpu_bf16 must be one of off, on, auto; got 'yes'"):
        TrainConfig(cpu_bf16="yes")


@pytest.mark.parametrize(
    "features, onednn, native",
    [
        ({"avx512_f": True, "avx512_bf16": True}, True, True),  # Cooper Lake, Zen 4
        ({"avx512_f": True, "amx_bf16": True}, True, True),  # Sapphire Rapids
        ({"bf16": True}, True, True),  # Armv8.6
        ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, True, False),  # Skylake-X: emulated
        ({"avx2": True}, False, False),  # AVX2 only: oneDNN has no bfloat16
        ({}, True, True),  # a torch without cpuinfo's report: oneDNN's check alone
        ({}, False, False),
    ],
)
def test_cpu_bf16_auto_on_each_kind_of_processor(monkeypatch, features, onednn, native):
    """``auto`` takes bfloat16 only where the processor has bfloat16 instructions; the detection
    is forced, so both branches run on whatever machine runs the tests."""
    monkeypatch.setattr(precision, "cpu_features", lambda: features)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert precision.cpu_has_native_bf16() is native
    assert compute_dtype(torch.device("cpu"), "auto") == (torch.bfloat16 if native else torch.float32)


def test_cpu_features_come_from_torchs_cpuinfo():
    features = precision.cpu_features()
    assert isinstance(features, dict) and features  # torch 2.13 has torch.cpu.get_capabilities
    assert precision.cpu_has_native_bf16() == (
        torch.ops.mkldnn._is_mkldnn_bf16_supported() and any(features.get(n) for n in precision.NATIVE_BF16)
    )


def test_bf16_autocast_samples_near_float32_and_its_gap_is_measured(tiny):
    """bfloat16 compute keeps float32 weights; its log-probs sit within bfloat16's resolution of
    float32's (the gap the trainer logs), and the gap is not zero (control: it measures)."""
    model, tok = tiny
    with compute_context(torch.device("cpu"), "on"):
        batch = _generate(model, tok, True)
        with torch.no_grad():
            reduced = completion_logprobs(model, batch, 1.0)
    assert next(model.parameters()).dtype == torch.float32
    with torch.no_grad():
        exact = completion_logprobs(model, batch, 1.0)
    gap = logprob_gap(reduced, exact, batch.completion_mask)
    assert 0 < gap["precision/bf16_logprob_gap_mean"] <= gap["precision/bf16_logprob_gap_max"] < 0.1
    assert (batch.old_logprobs - reduced).abs().max() < 0.1


def test_a_cpu_bf16_run_logs_the_gap_and_a_float32_run_does_not(tmp_path):
    """cpu_bf16=on trains with float32 weights and logs the bfloat16 log-prob gap each step, or
    every bf16_gap_every steps from the first."""
    from tests.conftest import run_trainer
    from trainer.logs import read_jsonl

    assert run_trainer(tmp_path / "bf16", "steps=3", "cpu_bf16=on") == 0
    rows = read_jsonl(tmp_path / "bf16" / "metrics.jsonl")
    assert all(0 < r["precision/bf16_logprob_gap_mean"] <= r["precision/bf16_logprob_gap_max"] < 0.5 for r in rows)
    assert run_trainer(tmp_path / "fp32", "steps=3") == 0
    assert not any("precision/bf16_logprob_gap_mean" in r for r in read_jsonl(tmp_path / "fp32" / "metrics.jsonl"))
    assert run_trainer(tmp_path / "every2", "steps=3", "cpu_bf16=on", "bf16_gap_every=2") == 0
    rows = read_jsonl(tmp_path / "every2" / "metrics.jsonl")
    assert [r["step"] for r in rows if "precision/bf16_logprob_gap_mean" in r] == [1, 3]


@pytest.mark.parametrize("new_tokens", [1, 5])
def test_shared_prompt_passes_give_the_full_passes_logprobs_and_gradient(tiny, new_tokens):
    """One pass per distinct prompt, its cache indexed out to the rollouts: the log-probs and
    the gradient of a loss on them equal one pass over each full sequence (the rows here are
    out of order and repeat prompts); a perturbed rollout-to-prompt map (control) does not."""
    model, tok = tiny
    engine = TransformersEngine(model, tok)
    batch = engine.generate(PROMPTS, COUNTS, Sampling(1.0, new_tokens), torch.Generator().manual_seed(2))
    rows = torch.tensor([8, 0, 3, 1, 9, 4])
    weights = torch.linspace(-1, 1, batch.completion_mask.shape[1])

    def value_and_gradient(share: bool, prompt_index=None):
        model.zero_grad()
        copy = batch if prompt_index is None else type(batch)(**{**batch.__dict__, "prompt_index": prompt_index})
        logp = completion_logprobs(model, copy, 1.0, rows, share_prompts=share)
        (logp * weights).sum().backward()
        return logp.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    full, full_grad = value_and_gradient(False)
    shared, shared_grad = value_and_gradient(True)
    assert (full - shared).abs().max() < 1e-5 and full.abs().sum() > 0
    assert (full_grad - shared_grad).abs().max() < 1e-5 * full_grad.abs().max()
    wrong = [0 if q == 3 else q for q in batch.prompt_index]  # prompt 3's rollouts read prompt 0's cache
    wrong_value, _ = value_and_gradient(True, wrong)
    assert (wrong_value - full).abs().max() > 1e-3
    model.zero_grad()


@pytest.mark.parametrize("share", [False, True])
def test_the_math_attention_path_gives_the_flash_paths_logprobs_and_gradient(tiny, monkeypatch, share):
    """A CPU pass with gradients takes SDPA's math path (trainer.logprobs.attention_backend):
    the log-probs and gradient equal those of the default path, forced by a zero size limit."""
    model, tok = tiny
    batch = TransformersEngine(model, tok).generate(PROMPTS, COUNTS, Sampling(1.0, 5), torch.Generator().manual_seed(3))
    weights = torch.linspace(-1, 1, batch.completion_mask.shape[1])

    def value_and_gradient():
        model.zero_grad()
        logp = completion_logprobs(model, batch, 1.0, share_prompts=share)
        (logp * weights).sum().backward()
        return logp.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    math_value, math_grad = value_and_gradient()
    monkeypatch.setattr(logprobs, "MATH_ATTENTION_BYTES", 0)
    flash_value, flash_grad = value_and_gradient()
    assert (math_value - flash_value).abs().max() < 1e-5 and flash_value.abs().sum() > 0
    assert (math_grad - flash_grad).abs().max() < 1e-5 * flash_grad.abs().max()
    model.zero_grad()


def test_the_math_attention_path_is_taken_only_on_a_cpu_with_gradients_and_short_sequences(tiny, monkeypatch):
    """Which SDPA backends a pass may use (torch.backends.cuda's flags, which sdpa_kernel sets)."""
    model, _ = tiny
    short = torch.zeros(4, 32, dtype=torch.long)

    def flash_allowed(seq, grad=True):
        with torch.set_grad_enabled(grad), logprobs.attention_backend(model, seq):
            return torch.backends.cuda.flash_sdp_enabled()

    assert not flash_allowed(short)
    assert flash_allowed(short, grad=False)
    monkeypatch.setattr(logprobs, "MATH_ATTENTION_BYTES", 4 * model.config.num_attention_heads * 32**2 * 4 - 1)
    assert flash_allowed(short)  # one byte over the limit


def test_activation_checkpointing_keeps_the_default_attention_path(monkeypatch):
    """Checkpointing recomputes each layer in the backward pass, outside the pass's context: the
    math path there would save other tensors than the forward did. So a checkpointed model keeps
    the default path and its backward runs; control: forcing the math path makes torch's
    checkpoint refuse the recomputation."""
    tok = tiny_tokenizer()
    model = tiny_model("qwen2", len(tok)).train()
    enable_activation_checkpointing(model)
    batch = TransformersEngine(model, tok).generate(PROMPTS, COUNTS, Sampling(1.0, 5), torch.Generator().manual_seed(4))

    def backward():
        model.zero_grad()
        completion_logprobs(model, batch, 1.0, share_prompts=False).sum().backward()

    backward()
    assert all(p.grad is not None for p in model.parameters())
    monkeypatch.setattr(logprobs, "activation_checkpointing_enabled", lambda m: False)
    with pytest.raises(torch.utils.checkpoint.CheckpointError):
        backward()


def test_share_prompts_off_trains_the_same_first_step(tmp_path):
    """share_prompts=false (every rollout's prompt run on its own, in sampling and training) gives
    the first step's samples exactly and its loss and gradient norm to float32 rounding."""
    from tests.conftest import run_trainer
    from trainer.logs import read_jsonl

    assert run_trainer(tmp_path / "shared", "steps=1") == 0
    assert run_trainer(tmp_path / "alone", "steps=1", "share_prompts=false") == 0
    shared, alone = (read_jsonl(tmp_path / name / "metrics.jsonl")[0] for name in ("shared", "alone"))
    assert (
        shared["reward/mean"] == alone["reward/mean"]
        and shared["response_length/mean"] == alone["response_length/mean"]
    )
    assert shared["loss"] == pytest.approx(alone["loss"], rel=1e-4, abs=1e-7)
    assert shared["grad_norm"] == pytest.approx(alone["grad_norm"], rel=1e-4)
