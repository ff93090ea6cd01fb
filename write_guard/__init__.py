"""What every command of rlvr-lab that writes checks before it writes (README, "What the
commands write").

One rule for all of them (the trainer, ``rlvr-convert``, ``stats_tests --json``, ``rlvr-eval
--out``, and the record folders of ``simulators``, ``figures`` and ``rl_study``):

- an existing file or folder is replaced only when asked (``overwrite``), and then it is moved
  aside to a sibling ``<name>.replaced-<time>``, never deleted;
- a folder that holds a run (any of :data:`RUN_RECORDS`, or a ``run.lock`` that a live process
  holds) is never written over, not even with ``overwrite``, and no file of a run is replaced;
- an output is never one of the command's inputs;
- all of this, and that the destination can be written, is checked before the work starts, so a
  refusal costs nothing and a computed result is never lost to a bad path.

Only the standard library: every package may import it (tests/test_import_contracts.py).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

RUN_LOCK = "run.lock"
# the files and folders of a training run (trainer.run_folder): a folder with any of them holds a run
RUN_RECORDS = ("config.yaml", "metrics.jsonl", "rollouts.jsonl", "config_changes.jsonl", "checkpoints", "tensorboard")


class OutputError(ValueError):
    """An output path that must not be written as asked; the message names the option, the path
    and the way out."""


def lock_holder(folder: Path) -> str | None:
    """The process id written in ``folder/run.lock`` when a live process holds its flock, else None."""
    path = Path(folder) / RUN_LOCK
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(descriptor)  # also releases the shared lock taken to test it
    return None


def run_records(folder: Path) -> list[str]:
    """What in ``folder`` makes it hold a run: the names of :data:`RUN_RECORDS` present, and
    ``run.lock`` when a live process holds it. Empty: the folder holds no run."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [name for name in RUN_RECORDS if (folder / name).exists()]
    holder = lock_holder(folder)
    return found + ([f"{RUN_LOCK} (held by process {holder})"] if holder else [])


def _run_above(path: Path) -> tuple[Path, list[str]] | None:
    """The run folder that ``path`` is one of the records of, or lies inside one of them, with
    its records (another file next to a run's records, such as an evaluation, is not)."""
    absolute = path.resolve()
    for folder in absolute.parents:
        records = run_records(folder)
        if records and absolute.relative_to(folder).parts[0] in RUN_RECORDS + (RUN_LOCK,):
            return folder, records
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == Path(b).resolve() or (a.exists() and Path(b).exists() and os.path.samefile(a, b))
    except OSError:
        return False


def probe_writable(folder: Path, option: str) -> None:
    """Create and remove a file in ``folder`` (made if missing), or raise naming ``option``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"{option}: cannot write into {folder} ({exc.strerror or exc}); pass a writable path"
        ) from exc


def check_file(path, option: str, inputs=(), overwrite: bool = False) -> Path:
    """Check, before any work, that the file ``path`` (given as ``option``) may be written: not a
    folder, none of ``inputs``, not a record of a run or inside a run's records, absent unless
    ``overwrite``, its folder writable. Returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give the path of a file")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise OutputError(f"{option} {path} is also an input of this command; writing it would replace it")
    run = _run_above(path)
    if run is not None:
        folder, records = run
        raise OutputError(
            f"{option} {path} would write into the run in {folder} ({', '.join(records)}); choose a path outside it"
        )
    if path.exists() and not overwrite:
        raise OutputError(
            f"{option} {path} exists; pass --overwrite to move it aside (to {path.name}.replaced-<time>) "
            "and write a new one, or choose another path"
        )
    probe_writable(path.parent if str(path.parent) else Path("."), option)
    return path


def check_folder(path, option: str, overwrite: bool = False) -> Path:
    """Check, before any work, that the folder ``path`` may be written as a whole: not a file,
    not a folder that holds a run (even with ``overwrite``), empty or absent unless
    ``overwrite``, its parent writable."""
    path = Path(path)
    if path.is_file():
        raise OutputError(f"{option} {path} is a file; give a folder")
    records = run_records(path)
    if records:
        raise OutputError(
            f"{option} {path} holds a training run ({', '.join(records)}); it is never replaced: choose another folder"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputError(f"{option} {path} is not empty; pass --overwrite to move it aside and write a new one")
    probe_writable(path.resolve().parent, option)
    return path


def check_records_folder(path, option: str) -> Path:
    """Check, before any work, that ``path`` may take new files of the command's own (records that
    never replace another, the cache a study resumes from, figures): not a file, not a folder that
    holds a run or lies inside a run's records, writable (made if missing). Returns it as a Path."""
    path = Path(path)
    if path.is_file():
        raise OutputError(f"{option} {path} is a file; give a folder")
    records = run_records(path)
    run = (path, records) if records else _run_above(path)
    if run is not None:
        raise OutputError(
            f"{option} {path} would write into the run in {run[0]} ({', '.join(run[1])}); choose a folder outside it"
        )
    probe_writable(path, option)
    return path


def aside_name(path: Path) -> Path:
    """A free sibling name ``<name>.replaced-<time>[-k]`` for ``path``."""
    absolute = Path(path).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = absolute.with_name(f"{absolute.name}.replaced-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = absolute.with_name(f"{absolute.name}.replaced-{stamp}-{number}")
    return target


def move_aside(path) -> Path:
    """Rename the file or folder ``path`` to :func:`aside_name`; returns the new path."""
    target = aside_name(Path(path))
    Path(path).rename(target)
    return target


def write_file(path, text: str) -> Path | None:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, renamed), after
    moving an existing ``path`` aside. Returns where the previous file went, or None."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent if str(path.parent) else ".", delete=False, suffix=".tmp")
    try:
        with handle:
            handle.write(text)
        os.chmod(handle.name, 0o666 & ~_umask())
        previous = move_aside(path) if path.exists() else None
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return previous


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
