"""The --full ledger of every topic (larger grids, more draws). Run with `make test-slow`."""

import json

import pytest

from simulators.registry import TOPICS
from tests.conftest import run_module


@pytest.mark.slow
@pytest.mark.parametrize("topic", TOPICS)
def test_full_ledger(topic, tmp_path):
    proc = run_module(f"simulators.{topic}", "--full", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    rows = [r for check in record["checks"] for r in check["results"]]
    assert record["config"]["full"] is True
    assert all(r["verdict"] in ("PASS", "REJECTED", "REPORT") for r in rows)
