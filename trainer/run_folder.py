"""A run's folder (``output_dir``): one run at a time, and what a new run or a resume may do there.

- A run holds its folder with an exclusive ``fcntl.flock`` on ``run.lock`` for its whole life;
  a second process into the same folder refuses at once. The kernel releases the lock when the
  holder ends, by any means (kill -9 included), so a stale ``run.lock`` never blocks a resume.
- A folder *holds a run* when any of :data:`RUN_RECORDS` is in it. A new run refuses such a
  folder; with ``overwrite`` those records are moved to a sibling ``<folder>.replaced-<time>``
  (other files in the folder stay where they are).
- A resume compares the requested config with the run's ``config.yaml`` and refuses a change
  of any field outside :data:`SAFE_ON_RESUME`. :func:`record_config` appends the accepted
  changes, with the step they apply from, to ``config_changes.jsonl``.

:func:`claim` does all of this before the model loads.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from pathlib import Path

import yaml

import write_guard
from trainer.config import TrainConfig, load_config, save_config
from trainer.disk import probe_writable, writing

LOCK, CONFIG, CHANGES = write_guard.RUN_LOCK, "config.yaml", "config_changes.jsonl"
RUN_RECORDS = write_guard.RUN_RECORDS  # the one list every command that writes checks
# what a resumed run may change: when to stop, how often to save, and what it shows; every other
# field shapes the training (a different loss, seed, data, model or budget is a different run)
SAFE_ON_RESUME = (
    "steps",
    "save_every",
    "keep_checkpoints",
    "progress",
    "tensorboard",
    "log_clip_fractions",
    "output_dir",
)


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message names the folder and the way out."""


class RunFolder:
    """An output folder locked by this process until :meth:`close` (or the process's end).
    ``replaced`` is where ``overwrite`` moved the previous run's records, if it did."""

    def __init__(self, path: Path, descriptor: int):
        self.path, self.descriptor, self.replaced = path, descriptor, None

    def close(self) -> None:
        os.close(self.descriptor)  # releases the flock

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def claim(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> RunFolder:
    """Lock ``config.output_dir`` for this run after checking that the run may start there:
    writable, not in use, and either holding no run, or ``resume`` with a config that differs
    only in SAFE_ON_RESUME, or ``overwrite`` (which moves the old run aside)."""
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in output_dir and --overwrite replaces it: pass one of them")
    folder = Path(config.output_dir)
    probe_writable(folder)
    held = RunFolder(folder, _lock(folder))
    try:
        records = run_records(folder)
        if records and resume:
            check_resume_config(folder, config)
        elif records and overwrite:
            held.replaced = move_aside(folder, records)
        elif records:
            raise RunFolderError(
                f"output_dir {folder} holds a run ({', '.join(records)}): continue it with --resume, replace it with"
                " --overwrite (its records are moved aside), or choose another output_dir"
            )
    except BaseException:
        held.close()
        raise
    return held


def _lock(folder: Path) -> int:
    """An open descriptor of ``folder/run.lock`` holding an exclusive flock; the holder's
    process id is written in the file, for the message of the one refused."""
    path = folder / LOCK
    with writing(path):
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(descriptor)
        raise RunFolderError(
            f"output_dir {folder} is in use by another run (process {holder} holds {path}); two runs in one folder"
            " would interleave their logs: wait for it to end, or choose another output_dir"
        ) from None
    with writing(path):
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def run_records(folder: Path) -> list[str]:
    """The names of RUN_RECORDS present in ``folder`` (none: the folder holds no run)."""
    return [name for name in RUN_RECORDS if (folder / name).exists()]


def move_aside(folder: Path, records: list[str]) -> Path:
    """Move ``records`` of ``folder`` into a new sibling ``<folder>.replaced-<time>``; returns it."""
    target = write_guard.aside_name(folder)
    with writing(target):
        target.mkdir()
        for name in records:
            (folder / name).rename(target / name)
    return target


def config_differences(old: TrainConfig, new: TrainConfig) -> dict[str, tuple]:
    """``{field: (old value, new value)}`` for every field that differs."""
    before, after = dataclasses.asdict(old), dataclasses.asdict(new)
    return {name: (before[name], after[name]) for name in after if before.get(name) != after[name]}


def check_resume_config(folder: Path, config: TrainConfig) -> None:
    """Refuse to resume the run in ``folder`` with a config that differs from its config.yaml in
    a field outside SAFE_ON_RESUME; the message names each such field with both values."""
    path = folder / CONFIG
    if not path.exists():
        raise RunFolderError(f"--resume: {folder} holds a run but no {CONFIG} to check the config against")
    try:
        saved = load_config(path)
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise RunFolderError(f"--resume: the run's {path} cannot be read back ({exc})") from exc
    changed = {name: pair for name, pair in config_differences(saved, config).items() if name not in SAFE_ON_RESUME}
    if changed:
        listed = "; ".join(f"{name}: {old!r} in the run, {new!r} asked" for name, (old, new) in changed.items())
        raise RunFolderError(
            f"--resume with a config that differs from the run's {path}: {listed}. A resume may change only"
            f" {', '.join(SAFE_ON_RESUME)}; for other changes start a new run in another output_dir"
        )


def record_config(config: TrainConfig, output_dir, step: int) -> None:
    """Write ``config.yaml``. When the folder holds one with other values (a resume that changed
    a SAFE_ON_RESUME field), first append ``{"step", "time", "changes": {field: [old, new]}}``
    to ``config_changes.jsonl``: the changes apply from the step after ``step``."""
    folder = Path(output_dir)
    path = folder / CONFIG
    if path.exists():
        changes = config_differences(load_config(path), config)
        if changes:
            when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            row = {"step": step, "time": when, "changes": {name: list(pair) for name, pair in changes.items()}}
            with writing(folder / CHANGES), (folder / CHANGES).open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    with writing(path):
        save_config(config, path)
