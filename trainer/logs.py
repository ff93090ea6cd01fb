"""Run logs: per-step metrics (JSONL, and TensorBoard scalars when it is installed) and the
rollout log (stats_tests.rollout_log.SCHEMA, one row per rollout).

Both are appended to every step. A resume first checks both logs against the checkpoint's step
(:func:`resume_plan`): every step up to it is there, once, complete (the rollout log holds as
many rows of a step as its metrics row counts), and no line is corrupt, or the resume is refused
naming the file, the line and the step, with nothing changed. Rows of steps after the
checkpoint (the killed run's last steps) and a cut-short last line (the half-written row of a
kill) are then dropped, and the log as it was is kept beside it as
``<log>.replaced-<time>``. A run that starts at step 0 in a folder with logs (a resume that
found no checkpoint) moves them aside the same way. A failed write raises
trainer.disk.WriteError naming the log.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import write_guard
from trainer.checkpoint import ResumeError
from trainer.disk import writing

METRICS, ROLLOUTS = "metrics.jsonl", "rollouts.jsonl"


class LogError(ResumeError):
    """A run log that a resume cannot continue; the message names the file, the line or step,
    and the way out."""


@dataclass(frozen=True)
class Row:
    line: int
    text: str
    step: int
    data: dict


def read_rows(path: Path) -> tuple[list[Row], bool]:
    """The rows of the log ``path`` and whether its last line was cut short (not JSON: the
    half-written row of a kill). Any other line that is not a JSON object with an integer
    ``step`` raises a LogError naming the file and the line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows, cut = [], False
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            if number == len(lines):
                cut = True
                break
            raise LogError(f"{path}: line {number} is not a JSON row; the log is corrupt, not just cut short") from None
        step = data.get("step") if isinstance(data, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise LogError(f"{path}: line {number} has no step (an integer >= 1); the log is corrupt")
        rows.append(Row(number, text, step, data))
    return rows, cut


def _rollouts_of(metrics_row: dict) -> int:
    """How many rollout rows the step of ``metrics_row`` wrote: its allocation histogram."""
    return sum(int(n) * count for n, count in metrics_row["allocation/histogram"].items())


@dataclass(frozen=True)
class ResumePlan:
    """What a resume at ``step`` keeps of each log: the text of its kept rows, and whether
    anything is dropped (then the log is rewritten and the old one moved aside)."""

    kept: dict
    dropped: dict


def resume_plan(output: Path, step: int) -> ResumePlan:
    """Check the logs of the run in ``output`` against its checkpoint at ``step`` (see the module
    docstring) without changing anything; a LogError names the first problem."""
    kept, dropped = {}, {}
    metrics_path, rollouts_path = output / METRICS, output / ROLLOUTS
    if not metrics_path.exists():
        raise LogError(f"--resume: the run's {metrics_path} is missing, but its checkpoint is at step {step}")
    rows, cut = read_rows(metrics_path)
    metrics = [r for r in rows if r.step <= step]
    steps = [r.step for r in metrics]
    if steps != list(range(1, step + 1)):
        raise LogError(_hole(metrics_path, steps, step, cut))
    kept[METRICS] = [r.text for r in metrics]
    dropped[METRICS] = len(rows) - len(metrics) + cut
    expected = {r.step: _rollouts_of(r.data) for r in metrics}
    rows, cut = read_rows(rollouts_path) if rollouts_path.exists() else ([], False)
    rollouts = [r for r in rows if r.step <= step]
    counts = Counter(r.step for r in rollouts)
    for s in range(1, step + 1):
        if counts[s] != expected[s]:
            raise LogError(
                f"--resume: {rollouts_path} holds {counts[s]} rows of step {s}, its metrics row counts {expected[s]};"
                f" the checkpoint at step {step} has passed it, so the log is incomplete (nothing was changed)."
                " Restore the log, or start a new run with --overwrite"
            )
    if [r.step for r in rollouts] != sorted(counts.elements()):
        raise LogError(
            f"--resume: {rollouts_path} holds its steps out of order; the log is corrupt (nothing was changed)"
        )
    kept[ROLLOUTS] = [r.text for r in rollouts]
    dropped[ROLLOUTS] = len(rows) - len(rollouts) + cut
    return ResumePlan(kept, dropped)


def _hole(path: Path, steps: list[int], step: int, cut: bool) -> str:
    """The message for a metrics log whose steps up to the checkpoint's ``step`` are not 1..step."""
    missing = sorted(set(range(1, step + 1)) - set(steps))
    repeated = sorted(s for s, n in Counter(steps).items() if n > 1)
    what = []
    if missing:
        what.append(f"no row of step {', '.join(map(str, missing))}" + (" (its last line is cut short)" if cut else ""))
    if repeated:
        what.append(f"step {', '.join(map(str, repeated))} more than once")
    if not what:
        what.append("its steps out of order")
    return (
        f"--resume: {path} has {' and '.join(what)}, but the checkpoint is at step {step}: resuming would leave"
        " a hole in the run's records (nothing was changed). Restore the log, or start a new run with --overwrite"
    )


def apply_resume_plan(output: Path, plan: ResumePlan) -> list[Path]:
    """Rewrite each log that drops rows to its kept rows; the old log is moved aside first
    (write_guard.write_file). Returns where the old logs went."""
    moved = []
    for name, lines in plan.kept.items():
        if plan.dropped[name]:
            path = output / name
            with writing(path):
                moved.append(write_guard.write_file(path, "".join(line + "\n" for line in lines)))
    return moved


class JsonlLog:
    """An append-only JSONL log: one write per step."""

    def __init__(self, path):
        self.path = Path(path)

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
    """The logs of a run in ``output``: metrics.jsonl, rollouts.jsonl and TensorBoard. With
    ``plan`` (a checked resume) the JSONL logs keep the plan's rows; without it they start
    empty, and logs already there are moved aside. ``moved``: where old logs went."""

    def __init__(self, output, plan: ResumePlan | None, tensorboard: bool):
        output = Path(output)
        with writing(output):
            output.mkdir(parents=True, exist_ok=True)
        if plan is None:
            self.moved = [_start_afresh(output / name) for name in (METRICS, ROLLOUTS)]
        else:
            self.moved = apply_resume_plan(output, plan)
        self.moved = [path for path in self.moved if path is not None]
        self.metrics = JsonlLog(output / METRICS)
        self.rollouts = JsonlLog(output / ROLLOUTS)
        self.board = TensorBoard(output / "tensorboard", tensorboard)

    def write(self, metrics: dict, rows: list[dict]) -> None:
        self.metrics.write([metrics])
        self.rollouts.write(rows)
        self.board.write(metrics)

    def close(self) -> None:
        self.board.close()


def _start_afresh(path: Path) -> Path | None:
    """An empty log at ``path``; a log already there with rows is moved aside first (returned)."""
    with writing(path):
        moved = write_guard.move_aside(path) if path.exists() and path.stat().st_size else None
        path.write_text("")
    return moved
