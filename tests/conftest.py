import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def without_timings(metrics):
    """Metrics rows without their wall-clock entries (``time/...``), for run-to-run comparisons."""
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in metrics]


def run_module(*args, cwd=ROOT):
    """Run ``python -m <args>`` from the repository root; return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def variance_run(tmp_path_factory):
    """One quick run of ``python -m simulators.variance``, shared by the CLI and figure tests."""
    out = tmp_path_factory.mktemp("records")
    proc = run_module("simulators.variance", "--out", str(out), "--no-progress", "--seed", "7")
    return proc, out
