"""The --full ledger of every topic (larger grids, more draws). Run with `make test-slow`.

Each run gets one BLAS thread: pytest-xdist already runs one topic per core, and OpenBLAS's
threads on the checks' small matrices, sharing cores with the other worker, made the predictor's
V9 check 15x slower (271 s against 18 s for its --full run on the 2-core machine). The thread
count changes no kernel choice and is safe on every processor."""

import json

import pytest

from simulators.registry import TOPICS
from tests.conftest import run_module

ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("topic", TOPICS)
def test_full_ledger(topic, tmp_path):
    proc = run_module(f"simulators.{topic}", "--full", "--no-progress", "--out", str(tmp_path), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    rows = [r for check in record["checks"] for r in check["results"]]
    assert record["config"]["full"] is True
    assert all(r["verdict"] in ("PASS", "REJECTED", "REPORT") for r in rows)
