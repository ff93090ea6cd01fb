"""The rollout log: one row per rollout, written by the trainer and the simulators, read by
``python -m stats_tests`` and the figures (../shared/DESIGN.md, "Rollout log").

JSON Lines, one object per line, with the fields of :data:`SCHEMA`. Parquet files with the
same columns are read too when pandas and pyarrow are installed (they are not dependencies).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

# field -> (JSON type, required, meaning)
SCHEMA = {
    "step": ("int", True, "training step (or checkpoint) at which the rollout was generated"),
    "prompt_id": ("str | int", True, "identifier of the prompt (question)"),
    "rollout": ("int", True, "index of the rollout within its prompt's group, 0..n-1"),
    "reward": ("float", True, "verifier reward R of the rollout (+-1, 0/1 or continuous)"),
    "response_length": ("int", False, "number of generated tokens"),
    "z_norm": ("float", True, "Z = ||H(o)||_2, the norm of the token-averaged log-likelihood gradient (VIP §4)"),
    "n_allocated": ("int", False, "rollouts allocated to the prompt at this step"),
    "p_hat": ("float | null", False, "predicted success probability used by the allocator"),
}
REQUIRED = tuple(name for name, (_, required, _) in SCHEMA.items() if required)


def write_rollout_log(path, rows) -> Path:
    """Write ``rows`` (dicts with the :data:`SCHEMA` fields) as JSON Lines, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _check_row(row: dict, where: str) -> dict:
    missing = [name for name in REQUIRED if name not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}")
    for name in ("reward", "z_norm"):
        value = row[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{where}: {name} must be a finite number; got {value!r}")
    return row


def read_rollout_log(path) -> list[dict]:
    """The rows of a JSONL (or Parquet) rollout log, each checked for the required fields."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"LOG: {path} is not a file")
    if path.suffix == ".parquet":
        try:
            import pandas as pd  # optional: only for Parquet logs
        except ImportError as exc:
            raise ValueError("LOG: reading Parquet needs pandas and pyarrow (`pip install pandas pyarrow`)") from exc
        rows = pd.read_parquet(path).to_dict("records")
        return [_check_row(row, f"{path} row {i}") for i, row in enumerate(rows)]
    rows = []
    with path.open() as handle:
        for i, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not a JSON object ({exc.msg})") from exc
            rows.append(_check_row(row, f"{path}:{i}"))
    if not rows:
        raise ValueError(f"LOG: {path} holds no rollout")
    return rows


def groups_by_step(rows: list[dict]) -> dict[int, tuple[list[np.ndarray], list[np.ndarray]]]:
    """{step: (rewards per prompt, z_norms per prompt)}, prompts in order of first appearance."""
    grouped: dict[int, dict] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for row in rows:
        rewards, norms = grouped[int(row["step"])][row["prompt_id"]]
        rewards.append(float(row["reward"]))
        norms.append(float(row["z_norm"]))
    return {
        step: ([np.array(r) for r, _ in prompts.values()], [np.array(z) for _, z in prompts.values()])
        for step, prompts in sorted(grouped.items())
    }
