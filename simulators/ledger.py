"""Claim results, the verdict table and the JSON record of a run.

A check produces :class:`ClaimResult` rows of three kinds:

- ``claim``   a statement of a paper that should hold: PASS or FAIL;
- ``control`` a negative control (a deliberately wrong formula or a violated
  assumption) that the same check must reject: REJECTED or NOT REJECTED;
- ``report``  a measured comparison with no pass/fail meaning (how far a
  statement holds outside its assumptions): REPORT.

A run fails when a claim fails or a control is not rejected.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

KINDS = ("claim", "control", "report")
Z_THRESHOLD = 4.0  # DESIGN.md: a claim passes at |z| < 4
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"  # a record's "created" and file-name stamp (UTC, microseconds)


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """One row of the verdict table.

    ``statistic`` is a z-score (``stat_name`` "z" or "max|z|") or a violation rate
    ("rate"); ``ok`` is True when a claim holds, a control is rejected, or the
    row is a report. ``details`` carries the per-cell data figures are drawn from.
    """

    claim: str
    kind: str
    what: str
    estimate: float | None
    se: float | None
    theory: float | None
    statistic: float | None
    stat_name: str
    ok: bool
    details: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")

    @property
    def verdict(self) -> str:
        if self.kind == "claim":
            return "PASS" if self.ok else "FAIL"
        if self.kind == "control":
            return "REJECTED" if self.ok else "NOT REJECTED"
        return "REPORT"

    def to_json(self) -> dict:
        row = dataclasses.asdict(self)
        row["verdict"] = self.verdict
        return _json_safe(row)


def report(claim: str, what: str, details: dict, estimate: float | None = None, theory: float | None = None) -> ClaimResult:
    """A ``report`` row: a measured comparison with no pass/fail meaning."""
    return ClaimResult(claim, "report", what, estimate, None, theory, None, "", True, details)


def run_failed(results) -> bool:
    """True when a claim failed or a negative control was not rejected."""
    return any(not r.ok for r in results if r.kind in ("claim", "control"))


def format_table(results) -> str:
    """The verdict table as fixed-width text."""
    header = ("id", "kind", "what was compared", "estimate ± SE", "theory", "statistic", "verdict")
    rows = [header]
    for r in results:
        rows.append(
            (
                r.claim,
                r.kind,
                r.what,
                _fmt_estimate(r.estimate, r.se),
                _fmt_number(r.theory),
                "" if r.statistic is None else f"{r.stat_name}={_fmt_number(r.statistic)}",
                r.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_record(out_dir: Path, name: str, config: dict, seed: int, checks: list[dict]) -> Path:
    """Write one JSON record for a run and return its path.

    ``checks`` holds, per check, its name, claim ids, wall time and result rows. The file is
    ``NAME-STAMP-seedSEED.json`` with a UTC stamp to the microsecond; a name already taken
    gets ``-2``, ``-3``, ... (:func:`_publish`), so no record ever replaces another.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime(STAMP_FORMAT)
    record = {
        "name": name,
        "created": stamp,
        "package": "rlvr-lab",
        "version": _package_version(),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "seed": seed,
        "config": config,
        "checks": checks,
    }
    return _publish(out_dir, f"{name}-{stamp}-seed{seed}", json.dumps(_json_safe(record), indent=1))


def _publish(out_dir: Path, stem: str, text: str) -> Path:
    """Write ``text`` to ``STEM.json``, or ``STEM-2.json``, ``STEM-3.json``, ... in ``out_dir``:
    the first name no file holds yet.

    The name is claimed by an exclusive create (``open(..., "x")`` fails on an existing
    file, so two writers never claim one name), then the complete text, written to a
    temporary file of its own, replaces the empty claimed file in one ``os.replace``: a
    record is never half-written and never overwrites another.
    """
    with tempfile.NamedTemporaryFile("w", dir=out_dir, prefix=f".{stem}-", suffix=".tmp", delete=False) as handle:
        handle.write(text)
    try:
        for k in itertools.count(1):
            path = out_dir / (f"{stem}.json" if k == 1 else f"{stem}-{k}.json")
            try:
                open(path, "x").close()
            except FileExistsError:
                continue
            os.replace(handle.name, path)
            return path
    finally:
        Path(handle.name).unlink(missing_ok=True)


def _fmt_number(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.4g}"


def _fmt_estimate(estimate, se) -> str:
    if estimate is None:
        return ""
    if se is None:
        return _fmt_number(estimate)
    return f"{estimate:.4g} ± {se:.2g}"


def _json_safe(value):
    """Floats to JSON: numpy arrays to lists, numpy scalars to Python, inf/NaN to strings."""
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _package_version() -> str:
    try:
        return metadata.version("rlvr-lab")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
