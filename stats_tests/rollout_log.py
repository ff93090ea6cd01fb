"""The rollout log: one row per rollout, written by the trainer and the simulators, read by
``python -m stats_tests`` and the figures.

JSON Lines, one object per line, with the fields of :data:`SCHEMA`. Parquet files with the
same columns are read too when pandas and pyarrow are installed (they are not dependencies).
"""

from __future__ import annotations

import json
import math
import numbers
from collections import defaultdict
from pathlib import Path

import numpy as np

import write_guard

# field -> (JSON type and accepted range, required, meaning)
SCHEMA = {
    "step": ("int >= 0", True, "training step (or checkpoint) at which the rollout was generated"),
    "prompt_id": ("str | int", True, "identifier of the prompt (question)"),
    "rollout": ("int >= 0", True, "index of the rollout within its prompt's group, 0..n-1"),
    "reward": ("finite float", True, "verifier reward R of the rollout (+-1, 0/1 or continuous)"),
    "response_length": ("int >= 0 | null", False, "number of generated tokens"),
    "z_norm": (
        "finite float >= 0",
        True,
        "Z = ||H(o)||_2, the norm of the token-averaged log-likelihood gradient (VIP §4)",
    ),
    "n_allocated": ("int >= 1 | null", False, "rollouts allocated to the prompt at this step"),
    "p_hat": ("float in [0, 1] | null", False, "predicted success probability used by the allocator"),
}
REQUIRED = tuple(name for name, (_, required, _) in SCHEMA.items() if required)


def rollout_log_text(rows) -> str:
    """``rows`` (dicts with the :data:`SCHEMA` fields) as JSON Lines."""
    return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)


def write_rollout_log(path, rows, overwrite: bool = False) -> Path:
    """Write ``rows`` as JSON Lines to ``path``, atomically. An existing file is replaced only
    with ``overwrite``, and then moved aside first (write_guard.write_file)."""
    path = write_guard.check_file(path, "path", overwrite=overwrite)
    write_guard.write_file(path, rollout_log_text(rows))
    return path


def _integer(value) -> int | None:
    """``value`` as an int when it is a whole number (3 or 3.0; not True), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def _number(value) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def _checked_field(name: str, value, where: str):
    """One field of a row, in its accepted range (see :data:`SCHEMA`), as an int, float or str."""
    if name in ("step", "rollout", "response_length", "n_allocated"):
        lowest = 1 if name == "n_allocated" else 0
        number = _integer(value)
        if number is None or number < lowest:
            raise ValueError(f"{where}: {name} must be an integer >= {lowest}; got {value!r}")
        return number
    if name == "prompt_id":
        if isinstance(value, str):
            return value
        number = _integer(value)
        if number is None:
            raise ValueError(f"{where}: prompt_id must be a string or an integer; got {value!r}")
        return number
    number = _number(value)
    if name == "reward" and number is None:
        raise ValueError(f"{where}: reward must be a finite number; got {value!r}")
    if name == "z_norm" and (number is None or number < 0):
        raise ValueError(f"{where}: z_norm must be a finite number >= 0 (a gradient norm); got {value!r}")
    if name == "p_hat" and (number is None or not 0.0 <= number <= 1.0):
        raise ValueError(f"{where}: p_hat must be null or a probability in [0, 1]; got {value!r}")
    return number


def _check_row(row, where: str) -> dict:
    """The row with every field checked and normalised (whole-number floats to ints); optional
    fields may be null."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not a JSON object; got {type(row).__name__}")
    missing = [name for name in REQUIRED if name not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}")
    checked = dict(row)
    for name in SCHEMA:
        if name in row and (name in REQUIRED or row[name] is not None):
            checked[name] = _checked_field(name, row[name], where)
    return checked


def _refuse_duplicates(rows: list[dict], places: list[str]) -> None:
    """Each (step, prompt_id, rollout) may appear once: a log concatenated with itself would
    otherwise double every group silently."""
    first = {}
    for row, place in zip(rows, places):
        key = (row["step"], row["prompt_id"], row["rollout"])
        if key in first:
            raise ValueError(
                f"{place}: duplicate of {first[key]} (step {key[0]}, prompt_id {key[1]!r}, rollout {key[2]}); "
                "each (step, prompt_id, rollout) must appear once"
            )
        first[key] = place


def read_rollout_log(path) -> list[dict]:
    """The rows of a JSONL (or Parquet) rollout log, each checked against :data:`SCHEMA`'s
    ranges (integers >= 0 for step and rollout, z_norm >= 0, p_hat in [0, 1], ...), with no
    (step, prompt_id, rollout) twice. Errors name the line (or Parquet row) and the field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"LOG: {path} is not a file")
    if path.suffix == ".parquet":
        try:
            import pandas as pd  # optional: only for Parquet logs
        except ImportError as exc:
            raise ValueError("LOG: reading Parquet needs pandas and pyarrow (`pip install pandas pyarrow`)") from exc
        frame = pd.read_parquet(path)
        frame = frame.astype(object).where(frame.notna(), None)  # pandas reads a null as NaN
        places = [f"{path} row {i}" for i in range(len(frame))]
        rows = [_check_row(row, place) for row, place in zip(frame.to_dict("records"), places)]
    else:
        rows, places = [], []
        with path.open() as handle:
            for i, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{i}: not a JSON object ({exc.msg})") from exc
                rows.append(_check_row(row, f"{path}:{i}"))
                places.append(f"{path}:{i}")
    if not rows:
        raise ValueError(f"LOG: {path} holds no rollout")
    _refuse_duplicates(rows, places)
    return rows


def groups_by_step(rows: list[dict]) -> dict[int, tuple[list[np.ndarray], list[np.ndarray]]]:
    """{step: (rewards per prompt, z_norms per prompt)}, prompts in order of first appearance."""
    grouped: dict[int, dict] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for row in rows:
        rewards, norms = grouped[row["step"]][row["prompt_id"]]
        rewards.append(float(row["reward"]))
        norms.append(float(row["z_norm"]))
    return {
        step: ([np.array(r) for r, _ in prompts.values()], [np.array(z) for _, z in prompts.values()])
        for step, prompts in sorted(grouped.items())
    }
