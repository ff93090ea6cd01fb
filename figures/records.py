"""Reading a records directory: the ledger records in it, and the newest complete entry of a check.

A check entry is complete when it holds rows of every claim its check serves: a ``--only``
run keeps only the rows of the selected claims, so its entry of a shared check (V1 of
``binary_rewards``, which serves V1 and V2) is partial and is passed over for an older
complete one. A ``.json`` file that is not a ledger record is skipped with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_records(records_dir: Path) -> tuple[list[tuple[Path, dict]], list[str]]:
    """(path, record) of every ledger record in ``records_dir``, and a warning naming each
    ``.json`` file there that is not one (unreadable, not JSON, or not of a record's shape)."""
    records, warnings = [], []
    for path in sorted(Path(records_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.append(f"skipped {path}: not a readable JSON file ({exc})")
            continue
        problem = _record_problem(record)
        if problem:
            warnings.append(f"skipped {path}: not a ledger record ({problem})")
            continue
        records.append((path, record))
    return records, warnings


def _record_problem(record) -> str | None:
    """Why ``record`` does not have the shape simulators.ledger.write_record gives, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if not isinstance(record.get("created"), str) or not isinstance(record.get("checks"), list):
        return "no 'created' stamp or no 'checks' list"
    for i, check in enumerate(record["checks"]):
        if not isinstance(check, dict) or not isinstance(check.get("name"), str):
            return f"checks[{i}] has no 'name'"
        if not isinstance(check.get("claims"), list):
            return f"checks[{i}] has no 'claims' list"
        results = check.get("results")
        if not isinstance(results, list) or not all(isinstance(r, dict) and "claim" in r for r in results):
            return f"checks[{i}] has no 'results' list of rows with a 'claim'"
    return None


def is_complete(check: dict) -> bool:
    """True when the entry holds rows of every claim its check serves (not cut by ``--only``)."""
    return bool(check["results"]) and set(check["claims"]) <= {r["claim"] for r in check["results"]}


def newest_check(records: list[tuple[Path, dict]], check_name: str) -> dict | None:
    """The complete entry of ``check_name`` in the newest record that holds one, or None.

    Records are ordered by their ``created`` stamp, then by modification time and file
    name (records written within one microsecond).
    """
    found = []
    for path, record in records:
        for check in record["checks"]:
            if check["name"] == check_name and is_complete(check):
                found.append(((record["created"], path.stat().st_mtime_ns, path.name), check))
    return max(found, key=lambda item: item[0])[1] if found else None


def claims_of(records: list[tuple[Path, dict]], check_name: str) -> list[str]:
    """The claim ids ``check_name`` serves, as its entries in ``records`` list them (a partial
    ``--only`` entry lists them all too); empty when no record holds the check."""
    entries = [check for _, record in records for check in record["checks"] if check["name"] == check_name]
    return list(dict.fromkeys(claim for check in entries for claim in check["claims"]))


def rows_of(check: dict, claim: str, kind: str | None = None) -> list[dict]:
    """The result rows of ``claim`` (optionally of one kind) in a check entry."""
    return [r for r in check["results"] if r["claim"] == claim and (kind is None or r["kind"] == kind)]
