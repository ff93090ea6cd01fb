"""Policy, reference model and tokenizer.

``load_policy(name)`` takes any ``transformers`` causal LM by hub name or local path (float32
weights, bfloat16 compute on GPU: see :func:`resolve_dtype`), a ``.gguf`` file, or a packaged
model by name (``smollm2-135m-instruct``; trainer.model_sources): tokenizer and dequantised
weights both read from the GGUF file, offline. ``tiny:qwen2`` and ``tiny:llama`` build a two-layer
model of that architecture with random weights and a character-level tokenizer made locally with
``tokenizers``: the offline tests and the tiny CPU config use them, and nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.model_sources import PACKAGED, gguf_path, load_gguf_model, load_gguf_tokenizer

TINY_CHARACTERS = list("0123456789+-=. \n")
TINY_SPECIALS = ["<pad>", "<eos>", "<unk>"]


def tiny_tokenizer(characters=None):
    """A character-level PreTrainedTokenizerFast over ``characters`` (default: digits, + - = .
    space and newline)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + list(characters or TINY_CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_model(architecture: str, vocab_size: int, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """A small causal LM of ``architecture`` (qwen2 or llama), 2 layers of width 64 unless told
    otherwise (the GPU smoke test uses a wider one), weights from ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
    if architecture not in classes:
        raise ValueError(f"tiny model architecture must be one of {', '.join(classes)}; got {architecture!r}")
    config_class, model_class = classes[architecture]
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    with torch.random.fork_rng(devices=[]):  # weights from the seed, torch's global RNG left as it was
        torch.manual_seed(seed)
        return model_class(config)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype of trainable weights. ``auto`` is float32 everywhere: AdamW's steps at VIP's
    learning rate (1e-6) are below bfloat16's resolution (~4e-3 relative) and would be lost;
    on a GPU the forward and backward passes run in bfloat16 (autocast, or FSDP2's mixed
    precision) while the weights and optimizer state stay in float32."""
    return torch.float32 if dtype == "auto" else getattr(torch, dtype)


def inference_dtype(device: torch.device) -> torch.dtype:
    """The dtype of a frozen model (the reference): bfloat16 on a GPU, float32 on a CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_tokenizer(name: str):
    """The tokenizer of ``name``; pad_token falls back to eos_token. Raises if there is none."""
    if name.startswith("tiny:"):
        return tiny_tokenizer()
    gguf = gguf_path(name)
    from transformers import AutoTokenizer

    try:
        tokenizer = load_gguf_tokenizer(gguf) if gguf else AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        hint = "" if gguf else f" (model may also name a .gguf file or a packaged model: {', '.join(PACKAGED)})"
        if not gguf and not Path(name).expanduser().exists():
            hint = f"; {name} is no local folder either{hint}"
        raise ValueError(f"model {name!r} has no loadable tokenizer: {exc}{hint}") from exc
    if not tokenizer("1 + 1 = 2", add_special_tokens=False)[
        "input_ids"
    ]:  # transformers builds an empty one from a bare config
        raise ValueError(
            f"model {name!r} has no loadable tokenizer: "
            f"it encodes text to nothing ({len(tokenizer)} tokens in its vocabulary)"
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {name!r} defines no eos_token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(name: str, device: torch.device, dtype: torch.dtype, vocab_size: int, seed: int = 0):
    """The causal LM ``name`` on ``device`` in ``dtype`` (see the module docstring)."""
    if name.startswith("tiny:"):
        model = tiny_model(name.split(":", 1)[1], vocab_size, seed)
    elif gguf := gguf_path(name):
        model = load_gguf_model(gguf, dtype)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    return model.to(device=device, dtype=dtype)


def activation_checkpointing_enabled(model) -> bool:
    """Whether ``model`` recomputes its layers in the backward pass (transformers 5:
    ``is_activation_checkpointing``; 4.x: ``is_gradient_checkpointing``); False for a model
    that has neither."""
    name = (
        "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else "is_gradient_checkpointing"
    )
    return bool(getattr(model, name, False))


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant).
    transformers 5 names it ``activation_checkpointing_enable``; 4.x ``gradient_checkpointing_enable``."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
