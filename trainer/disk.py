"""Writing to a run's folder: every failed write becomes a :class:`WriteError` that names the file
and the reason ("no space left on device" for ENOSPC), and :func:`probe_writable` finds a
read-only or full disk before a run loads its model.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path


class WriteError(RuntimeError):
    """A write to the run folder failed; the message names the path and the reason."""


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError in ``exc``'s chain: torch.save reports a failed write of its file object as a
    RuntimeError whose ``__context__`` is the OSError (measured with torch 2.13 on a full tmpfs)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _reason(error: OSError) -> str:
    """The reason of a failed write in words."""
    if error.errno == errno.ENOSPC:
        return "no space left on device"
    return (error.strerror or str(error)).lower()


@contextmanager
def writing(path, note: str = ""):
    """Run the body; an OSError raised in it (or wrapped by torch) becomes a WriteError naming
    ``path``, with ``note`` appended (e.g. which checkpoint is intact)."""
    try:
        yield
    except WriteError:
        raise
    except Exception as exc:
        error = _os_error(exc)
        if error is None:
            raise
        raise WriteError(f"cannot write {path}: {_reason(error)}{note}") from exc


def probe_writable(folder) -> None:
    """Create ``folder`` and write, then remove, a small probe file in it: a read-only folder or
    disk, or a full one, fails here with a WriteError. The probe is a real write because
    permission bits do not stop root (and ``os.access`` says yes to root as well): as root the
    probe fails exactly where the run's own writes would."""
    folder = Path(folder)
    probe = folder / f".write-probe-{os.getpid()}"
    with writing(probe, note=f"; output_dir {folder} must be a writable folder with free space"):
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(descriptor, b"probe\n")
        finally:
            os.close(descriptor)
            probe.unlink(missing_ok=True)
