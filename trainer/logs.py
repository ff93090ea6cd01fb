"""Run logs: per-step metrics (JSONL, and TensorBoard scalars when it is installed) and the
rollout log (stats_tests.rollout_log.SCHEMA, one row per rollout).

Both are appended to every step. On resume, rows of steps after the checkpoint (written
by the killed run after its last checkpoint) are dropped first, so each step appears once. A
failed write raises trainer.disk.WriteError naming the log (a row cut short by it is dropped by
the next resume, like the half-written row of a kill).
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.disk import writing


def truncate_after(path: Path, step: int) -> None:
    """Keep only rows whose ``step`` is <= ``step`` (rewrite, then rename). A last line that is
    not JSON is the half-written row of a killed run and is dropped; elsewhere it is an error."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(
                f"{path}: line {number} is not a JSON row; the log is corrupt, not just cut short"
            ) from None
        if row["step"] <= step:
            kept.append(line)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with writing(tmp):
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)


class JsonlLog:
    def __init__(self, path, resume_step: int | None = None):
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is None:
                self.path.write_text("")
            else:
                truncate_after(self.path, resume_step)

    def write(self, rows) -> None:
        text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)  # one write per step
        with writing(self.path), self.path.open("a") as handle:
            handle.write(text)


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

    def close(self) -> None:
        """Stop the writer's background thread (its events are flushed after every step)."""
        if self.writer is not None:
            self.writer.close()


class RunLogs:
    """The logs of a run in ``output``: metrics.jsonl, rollouts.jsonl and TensorBoard; with
    ``resume_step`` the JSONL logs keep their rows up to that step, otherwise they start empty."""

    def __init__(self, output, resume_step: int | None, tensorboard: bool):
        output = Path(output)
        self.metrics = JsonlLog(output / "metrics.jsonl", resume_step)
        self.rollouts = JsonlLog(output / "rollouts.jsonl", resume_step)
        self.board = TensorBoard(output / "tensorboard", tensorboard)

    def write(self, metrics: dict, rows: list[dict]) -> None:
        self.metrics.write([metrics])
        self.rollouts.write(rows)
        self.board.write(metrics)

    def close(self) -> None:
        self.board.close()
