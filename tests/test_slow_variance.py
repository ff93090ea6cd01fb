"""The --full variance ledger (larger grids, 10x the draws). Run with `make test-slow`."""

import json

import pytest

from tests.conftest import run_module


@pytest.mark.slow
def test_full_variance_ledger(tmp_path):
    proc = run_module("simulators.variance", "--full", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    rows = [r for check in record["checks"] for r in check["results"]]
    assert record["config"]["full"] is True
    assert all(r["verdict"] in ("PASS", "REJECTED", "REPORT") for r in rows)
