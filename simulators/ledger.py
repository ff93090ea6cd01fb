"""Claim results, the verdict table and the JSON record of a run.

A check produces :class:`ClaimResult` rows of three kinds, each built by its constructor:

- :func:`claim`   a statement of a paper that should hold: PASS or FAIL;
- :func:`control` a negative control (a deliberately wrong formula or a violated
  assumption) that the same check must reject: REJECTED or NOT REJECTED;
- :func:`report`  a measured comparison with no pass/fail meaning (how far a
  statement holds outside its assumptions): REPORT.

The ledger decides whether a row's statement holds, and writes its rule: from a z-statistic
by the one threshold rule (:data:`Z_THRESHOLD`, :data:`Z_TESTS`), or from a statistic and the
bound it must keep (:data:`BOUNDS`: an exact identity within a tolerance, a rate, a
comparison). No check computes a verdict or words a rule itself. A run fails when a claim
fails or a control is not rejected.
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
import textwrap
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

KINDS = ("claim", "control", "report")
Z_THRESHOLD = 4.0  # a claim passes at |z| < 4, z with the SE of the same samples
Z_TESTS = {  # z_test: (rule of the statement, whether a z meets it)
    "equal": (f"|z| < {Z_THRESHOLD:g}", lambda z: abs(z) < Z_THRESHOLD),  # no difference either way
    "not greater": (f"z < {Z_THRESHOLD:g}", lambda z: z < Z_THRESHOLD),  # no significant excess (a bound kept)
    "greater": (f"z >= {Z_THRESHOLD:g}", lambda z: z >= Z_THRESHOLD),  # a significant excess (one is better)
}
BOUNDS = {  # keyword: (its sign in the rule, whether a statistic keeps the bound)
    "at_most": ("<=", lambda statistic, bound: statistic <= bound),
    "below": ("<", lambda statistic, bound: statistic < bound),
    "at_least": (">=", lambda statistic, bound: statistic >= bound),
    "above": (">", lambda statistic, bound: statistic > bound),
}
TABLE_WIDTH = 120  # columns of the printed verdict table; the "what" text wraps to fit
MIN_WHAT_WIDTH = 30  # the "what" column is never narrower, even if the table then exceeds TABLE_WIDTH
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"  # a record's "created" and file-name stamp (UTC, microseconds)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClaimResult:
    """One row of the verdict table; built by :func:`claim`, :func:`control` or :func:`report`.

    ``holds`` says whether the row's statement holds by its ``rule`` (None for a report);
    ``statistic`` is the number the rule was applied to (``stat_name``: "z", "max|z|",
    "max rel", ...). ``details`` carries the per-cell data figures are drawn from.
    """

    claim: str
    kind: str
    what: str
    estimate: float | None = None
    se: float | None = None
    theory: float | None = None
    statistic: float | None = None
    stat_name: str = ""
    rule: str = ""
    holds: bool | None = None
    details: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")
        if self.kind == "report" and self.holds is not None:
            raise ValueError(f"{self.claim} report: a report has no pass/fail (holds must be None); got {self.holds!r}")
        if self.kind != "report" and not (isinstance(self.holds, bool) and self.rule):
            raise ValueError(
                f"{self.claim} {self.kind}: holds must be True or False and rule a non-empty text; "
                f"got holds={self.holds!r}, rule={self.rule!r}"
            )

    @property
    def ok(self) -> bool:
        """True when a claim holds, a control is rejected, or the row is a report. A claim or a
        control whose statistic is NaN is neither: its check is broken, and the run fails."""
        if self.kind == "report":
            return True
        if self.statistic is not None and np.isnan(self.statistic):
            return False
        return self.holds if self.kind == "claim" else not self.holds

    @property
    def verdict(self) -> str:
        if self.kind == "claim":
            return "PASS" if self.ok else "FAIL"
        if self.kind == "control":
            return "REJECTED" if self.ok else "NOT REJECTED"
        return "REPORT"

    def to_json(self) -> dict:
        row = dataclasses.asdict(self)
        row["ok"] = self.ok
        row["verdict"] = self.verdict
        return _json_safe(row)


def claim(claim_id: str, what: str, **measured) -> ClaimResult:
    """A statement of a paper that should hold: PASS when it holds by its rule, else FAIL.
    ``measured``: the keywords of :func:`decided`."""
    return decided("claim", claim_id, what, **measured)


def control(claim_id: str, what: str, **measured) -> ClaimResult:
    """A negative control, a statement that should not hold: REJECTED when it does not hold by its
    rule (the same rule as the claim it mirrors), else NOT REJECTED. ``measured``: see :func:`decided`."""
    return decided("control", claim_id, what, **measured)


def decided(
    kind: str,
    claim_id: str,
    what: str,
    *,
    z: float | None = None,
    max_abs_z: float | None = None,
    min_abs_z: float | None = None,
    z_test: str = "equal",
    at_most: float | None = None,
    below: float | None = None,
    at_least: float | None = None,
    above: float | None = None,
    statistic: float | None = None,
    stat_name: str = "",
    estimate: float | None = None,
    se: float | None = None,
    theory: float | None = None,
    details: dict | None = None,
) -> ClaimResult:
    """A claim or control row whose statement holds by one of two kinds of rule, both judged here.

    - A z-statistic, at :data:`Z_THRESHOLD`: ``z`` with ``z_test`` "equal" (holds at |z| < 4),
      "not greater" (z < 4: e.g. a violation rate not above delta) or "greater" (z >= 4: a
      significant improvement); or ``max_abs_z`` (every cell of a grid has |z| < 4), or
      ``min_abs_z`` (some cell has |z| < 4; its control is rejected when every cell is).
    - A bound (:data:`BOUNDS`) on ``statistic``, named ``stat_name``: ``at_most=`` (statistic
      <= bound), ``below=`` (<), ``at_least=`` (>=) or ``above=`` (>); the rule reads
      "<stat_name> <= <bound>".
    """
    z_given = {
        name: value for name, value in (("z", z), ("max|z|", max_abs_z), ("min|z|", min_abs_z)) if value is not None
    }
    bounds = {
        name: value
        for name, value in (("at_most", at_most), ("below", below), ("at_least", at_least), ("above", above))
        if value is not None
    }
    if len(z_given) + len(bounds) != 1:
        raise ValueError(
            f"{claim_id} {kind}: give exactly one of z=, max_abs_z=, min_abs_z= (a z-test) or "
            f"{'=, '.join(BOUNDS)}= (a bound on statistic=); got {', '.join([*z_given, *bounds]) or 'none of them'}"
        )
    if z_test not in Z_TESTS:
        raise ValueError(f"{claim_id} {kind}: z_test must be one of {', '.join(Z_TESTS)}; got {z_test!r}")
    if z_test != "equal" and "z" not in z_given:
        raise ValueError(
            f"{claim_id} {kind}: z_test={z_test!r} applies to z= only (max|z| and min|z| are judged "
            f"by < {Z_THRESHOLD:g}, a bound by its own sign)"
        )
    if bounds:
        ((keyword, bound),) = bounds.items()
        if statistic is None or not stat_name:
            raise ValueError(
                f"{claim_id} {kind}: {keyword}= bounds statistic=, named by stat_name=; got statistic={statistic!r}, "
                f"stat_name={stat_name!r}"
            )
        sign, keeps = BOUNDS[keyword]
        statistic, bound = float(statistic), float(bound)
        rule, holds = f"{stat_name} {sign} {_exact_text(bound)}", bool(keeps(statistic, bound))
    else:
        if statistic is not None or stat_name:
            raise ValueError(
                f"{claim_id} {kind}: a z-test names its own statistic; pass statistic=/stat_name= only with a bound"
            )
        ((stat_name, statistic),) = z_given.items()
        rule, meets = Z_TESTS[z_test] if stat_name == "z" else (f"{stat_name} < {Z_THRESHOLD:g}", Z_TESTS["equal"][1])
        holds = bool(meets(statistic))
    return ClaimResult(
        claim=claim_id,
        kind=kind,
        what=what,
        estimate=estimate,
        se=se,
        theory=theory,
        statistic=statistic,
        stat_name=stat_name,
        rule=rule,
        holds=holds,
        details=details if details is not None else {},
    )


def report(
    claim_id: str,
    what: str,
    details: dict | None = None,
    estimate: float | None = None,
    theory: float | None = None,
    *,
    se: float | None = None,
    statistic: float | None = None,
    stat_name: str = "",
) -> ClaimResult:
    """A ``report`` row: a measured comparison with no pass/fail meaning."""
    return ClaimResult(
        claim=claim_id,
        kind="report",
        what=what,
        estimate=estimate,
        se=se,
        theory=theory,
        statistic=statistic,
        stat_name=stat_name,
        details=details if details is not None else {},
    )


def run_failed(results) -> bool:
    """True when a claim failed or a negative control was not rejected."""
    return any(not r.ok for r in results if r.kind in ("claim", "control"))


def format_table(results, width: int = TABLE_WIDTH) -> str:
    """The verdict table as fixed-width text within ``width`` columns where the numbers allow: the
    "what was compared" text wraps onto indented lines of its own column (the JSON record keeps it
    whole), the numeric columns stay on the row's first line."""
    header = ("id", "kind", "what was compared", "estimate ± SE", "theory", "statistic", "verdict")
    rows = [header] + [
        (
            r.claim,
            r.kind,
            r.what,
            _fmt_estimate(r.estimate, r.se),
            _fmt_number(r.theory),
            "" if r.statistic is None else f"{r.stat_name}={_fmt_number(r.statistic)}",
            r.verdict,
        )
        for r in results
    ]
    what = header.index("what was compared")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    others = sum(widths) - widths[what] + 2 * (len(header) - 1)
    widths[what] = min(widths[what], max(MIN_WHAT_WIDTH, width - others))
    lines = []
    for row in rows:
        wrapped = textwrap.wrap(row[what], widths[what], subsequent_indent="  ") or [""]
        lines.append(_join((*row[:what], wrapped[0], *row[what + 1 :]), widths))
        lines.extend(_join(("",) * what + (more,), widths) for more in wrapped[1:])
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _join(cells, widths) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()


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


def _exact_text(x: float) -> str:
    """``x`` in its shortest form (``:g``) where that is exactly ``x``; else every digit it needs
    (1 - 1e-09 reads 0.999999999, not 1)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


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
