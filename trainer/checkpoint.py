"""Checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint is ``<output_dir>/checkpoints/step-<N>/state.pt`` (model, optimizer, scheduler,
allocator/predictor state, numpy and torch generator states, the prompt sampler's position,
the step). It is written to a ``.tmp`` directory that is then renamed, so a kill leaves
either the whole checkpoint or none; only the newest ``keep`` are kept.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(output_dir, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` for ``step`` atomically (write, then rename); prune old ones."""
    root = checkpoint_dir(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / f"step-{step}", root / f"step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(_steps(root))[:-keep]:
        shutil.rmtree(root / f"step-{old}")
    return final


def _steps(root: Path) -> list[int]:
    return [int(m.group(1)) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / "state.pt").exists()]


def latest_checkpoint(output_dir) -> Path | None:
    """The newest complete checkpoint, or None (``.tmp`` leftovers of a kill are ignored)."""
    root = checkpoint_dir(output_dir)
    steps = _steps(root) if root.exists() else []
    return root / f"step-{max(steps)}" if steps else None


def load_checkpoint(path) -> dict:
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
