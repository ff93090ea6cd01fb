"""Run logs: per-step metrics (JSONL, and TensorBoard scalars when it is installed) and the
rollout log of ../shared/DESIGN.md (stats_tests.rollout_log.SCHEMA, one row per rollout).

Both are appended to every step. On resume, rows of steps after the checkpoint (written
by the killed run after its last checkpoint) are dropped first, so each step appears once.
"""

from __future__ import annotations

import json
from pathlib import Path


def truncate_after(path: Path, step: int) -> None:
    """Keep only rows whose ``step`` is <= ``step`` (rewrite, then rename)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


class JsonlLog:
    def __init__(self, path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            truncate_after(self.path, resume_step)

    def write(self, rows) -> None:
        with self.path.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(row, allow_nan=False) + "\n")


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class TensorBoard:
    """Scalar metrics to TensorBoard when ``tensorboard`` is installed; otherwise nothing."""

    def __init__(self, directory, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(str(directory))

    def write(self, metrics: dict) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, metrics["step"])
        self.writer.flush()
