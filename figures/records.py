"""Finding the newest record entry of a check in a records directory."""

from __future__ import annotations

import json
from pathlib import Path


def newest_check(records_dir: Path, check_name: str) -> dict | None:
    """The entry of ``check_name`` in the newest record that ran it, or None.

    Records are ordered by their ``created`` stamp (then file name), so a
    ``--only`` run that skipped a check does not hide an older full run.
    """
    found = []
    for path in Path(records_dir).glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a foreign or damaged file is not a record
        for check in record.get("checks", []):
            if check.get("name") == check_name and check.get("results"):
                found.append((record.get("created", ""), path.name, check))
    return max(found, key=lambda item: item[:2])[2] if found else None


def rows_of(check: dict, claim: str, kind: str | None = None) -> list[dict]:
    """The result rows of ``claim`` (optionally of one kind) in a check entry."""
    return [r for r in check["results"] if r["claim"] == claim and (kind is None or r["kind"] == kind)]
