"""``python -m trainer.convert_gguf SOURCE OUT_DIR [--overwrite]`` (or ``rlvr-convert``).

Writes SOURCE (a ``.gguf`` file, a packaged model such as ``smollm2-135m-instruct``, or anything
else ``model:`` accepts) to OUT_DIR as a plain ``transformers`` folder: the dequantised float32
weights (``model.safetensors``), the config and the tokenizer with its chat template. ``model:
OUT_DIR`` then loads it without gguf, and in about a second instead of reading the GGUF file.

OUT_DIR is written to a hidden folder next to it (``.OUT_DIR.tmp-<pid>``) that is renamed once
complete, so an interrupted conversion leaves no partial OUT_DIR; a leftover of a killed one is
removed by the next conversion into the same OUT_DIR. A non-empty OUT_DIR is refused, before
anything loads, unless --overwrite, which moves it aside to ``OUT_DIR.replaced-<time>`` once
the new folder is complete; a folder that holds a training run is refused even then.

Exit status: 0 written; 2 refused or failed (OUT_DIR in the way, a SOURCE that does not load, a
missing package, a write that failed, e.g. on a full disk: nothing is left behind).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import write_guard


def check_destination(out_dir: Path, overwrite: bool) -> None:
    """Refuse an OUT_DIR that is a file, a folder that holds a training run (even with
    ``overwrite``), or a non-empty folder without ``overwrite`` (write_guard.check_folder)."""
    write_guard.check_folder(out_dir, "OUT_DIR", overwrite)


def write_folder(model, tokenizer, out_dir, overwrite: bool = False) -> Path:
    """Save ``model`` and ``tokenizer`` (``save_pretrained``, safetensors) to ``out_dir`` atomically:
    into a temporary folder next to it, then renamed. With ``overwrite`` a previous ``out_dir`` is
    moved aside (to ``<out_dir>.replaced-<time>``) only once the new one is complete."""
    out_dir = Path(out_dir)
    check_destination(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(leftover)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")  # mkdir, unlike mkdtemp, follows the umask
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            check_destination(out_dir, overwrite)  # again: a run may have started there meanwhile
            write_guard.move_aside(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def convert(source: str, out_dir, overwrite: bool = False) -> Path:
    """Load ``source`` as the trainer does (trainer.models, float32 on the CPU) and write it to
    ``out_dir`` (:func:`write_folder`)."""
    import torch

    from trainer.models import load_policy, load_tokenizer

    check_destination(Path(out_dir), overwrite)
    tokenizer = load_tokenizer(source)
    model = load_policy(source, torch.device("cpu"), torch.float32, len(tokenizer))
    return write_folder(model, tokenizer, out_dir, overwrite)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a GGUF or packaged model to a plain transformers folder (dequantised float32 safetensors)."
    )
    parser.add_argument("source", help="a .gguf file, a packaged model (smollm2-135m-instruct), a hub name or folder")
    parser.add_argument("out_dir", help="the folder to write; refused when not empty unless --overwrite")
    parser.add_argument(
        "--overwrite", action="store_true", help="move a non-empty OUT_DIR aside once the new one is complete"
    )
    args = parser.parse_args(argv)
    try:
        out = convert(args.source, args.out_dir, args.overwrite)
    except (ValueError, OSError, ImportError) as exc:  # OSError: also a full disk, after the cleanup
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}; load it with model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
