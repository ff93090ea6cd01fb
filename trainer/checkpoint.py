"""Checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint is ``<output_dir>/checkpoints/step-<N>/state.pt`` (model, optimizer, scheduler,
allocator/predictor state, numpy and torch generator states, the prompt sampler's position, the
step, the digest of the run's examples) and ``state.pt.sha256``, its SHA-256 in ``sha256sum``
format. Both are written to a ``step-<N>.tmp`` directory that is then renamed, so a kill leaves
either the whole checkpoint or none. Only the newest ``keep`` are kept; an old one is renamed to
``step-<N>.trash`` before it is deleted, so a kill during pruning leaves no half-deleted
``step-<N>``. ``.tmp`` and ``.trash`` leftovers are never loaded and are removed by the next
save.

:func:`load_newest_checkpoint` checks each checkpoint's digest, newest first, and falls back to
the next older one when a checkpoint does not match its digest or cannot be read; the ones it
skips are renamed ``step-<N>.corrupt`` (kept for inspection, never loaded).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from pathlib import Path

import torch

from trainer.disk import WriteError, writing

_STEP = re.compile(r"^step-(\d+)$")
_LEFTOVER = re.compile(r"^step-\d+\.(tmp|trash)$")
STATE, DIGEST = "state.pt", "state.pt.sha256"


class CheckpointError(ValueError):
    """A checkpoint that does not match its digest, or a run folder with no usable checkpoint."""


class ResumeError(ValueError):
    """A usable checkpoint that a resume must not continue from as asked (trained on other data,
    or logs that do not reach its step); refused before anything in the run folder changes."""


def checkpoint_dir(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_state(path: Path, state: dict) -> None:
    """torch.save through a Python file object: a failed write then surfaces as the OSError
    (ENOSPC, ...) in the exception's chain. Given a path, torch writes with its own C++ stream,
    and a full disk reads "unexpected pos" with no errno (torch/serialization.py:810-856,
    _open_zipfile_writer_file vs _open_zipfile_writer_buffer)."""
    with path.open("wb") as handle:
        torch.save(state, handle)


def save_checkpoint(output_dir, step: int, state: dict, keep: int = 2) -> Path:
    """Write ``state`` and its digest for ``step`` atomically (write, then rename); prune old ones.
    A failed write removes the partial checkpoint and raises a WriteError that names the file
    and the newest complete checkpoint, which is left as it was."""
    root = checkpoint_dir(output_dir)
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
    final, tmp = root / f"step-{step}", root / f"step-{step}.tmp"
    intact = latest_checkpoint(output_dir)
    note = f"; the newest complete checkpoint, {intact}, is intact" if intact else "; no complete checkpoint yet"
    try:
        with writing(tmp / STATE, note=note):
            tmp.mkdir()
            _write_state(tmp / STATE, state)
            (tmp / DIGEST).write_text(f"{_sha256(tmp / STATE)}  {STATE}\n")
    except WriteError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with writing(final):
        if final.exists():
            _retire(final)
        tmp.rename(final)
        for old in sorted(_steps(root))[:-keep]:
            _retire(root / f"step-{old}")
    return final


def _retire(path: Path) -> None:
    """Rename, then delete: a kill in between leaves a ``.trash`` directory, not a checkpoint."""
    trash = path.with_name(path.name + ".trash")
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash)


def _remove_leftovers(root: Path) -> None:
    """The ``.tmp`` and ``.trash`` directories a killed save or prune left behind."""
    for path in root.iterdir():
        if _LEFTOVER.match(path.name):
            shutil.rmtree(path)


def _steps(root: Path) -> list[int]:
    return [int(m.group(1)) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / STATE).exists()]


def latest_checkpoint(output_dir) -> Path | None:
    """The newest complete checkpoint, or None (``.tmp`` leftovers of a kill are ignored)."""
    root = checkpoint_dir(output_dir)
    steps = _steps(root) if root.exists() else []
    return root / f"step-{max(steps)}" if steps else None


def verify_checkpoint(path) -> bool:
    """Check ``state.pt`` against its digest: True when it matches, False when the checkpoint has
    no digest; a CheckpointError when it does not match."""
    path = Path(path)
    if not (path / DIGEST).exists():
        return False
    expected = (path / DIGEST).read_text().split()[0]
    actual = _sha256(path / STATE)
    if actual != expected:
        raise CheckpointError(
            f"{path / STATE} does not match its SHA-256 digest ({DIGEST}: {expected[:12]}..., file: {actual[:12]}...)"
        )
    return True


def load_checkpoint(path, verify: bool = True) -> dict:
    """The state of a checkpoint directory; with ``verify``, checked against its digest first
    (a CheckpointError on a mismatch; a checkpoint without a digest loads with a warning)."""
    path = Path(path)
    if verify and not verify_checkpoint(path):
        _warn(f"{path} has no SHA-256 digest ({DIGEST}); loading it unverified")
    return torch.load(path / STATE, map_location="cpu", weights_only=False)


def load_newest_checkpoint(output_dir) -> tuple[Path, dict] | None:
    """The newest checkpoint that matches its digest and loads, with its state; None when the
    folder has no checkpoint. Each one skipped is named on stderr and, once an older one has
    loaded, renamed ``step-<N>.corrupt``. When every checkpoint fails, a CheckpointError and
    nothing renamed."""
    root = checkpoint_dir(output_dir)
    bad = []
    for step in sorted(_steps(root) if root.exists() else [], reverse=True):
        path = root / f"step-{step}"
        try:
            state = load_checkpoint(path)
        except Exception as exc:  # a digest mismatch, or what torch.load raises on a cut or damaged file
            _warn(f"checkpoint {path} is unusable ({type(exc).__name__}: {exc}); trying the next older one")
            bad.append(path)
            continue
        for skipped in bad:
            skipped.rename(skipped.with_name(skipped.name + ".corrupt"))
            _warn(f"resuming from {path}; the unusable {skipped.name} is kept as {skipped.name}.corrupt")
        return path, state
    if bad:
        names = ", ".join(p.name for p in bad)
        raise CheckpointError(f"no usable checkpoint in {root}: {names} failed the checks above; nothing was changed")
    return None


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)
