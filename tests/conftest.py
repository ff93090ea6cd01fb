import os
import subprocess
import sys
from pathlib import Path

import numpy as np  # noqa: F401  (before the thread limit below: OpenBLAS keeps its own default here)
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist each worker gets cores / workers threads for torch (imported later in
    the worker) and for every process a test starts (both read OMP_NUM_THREADS when they load).
    With torch's default of one thread per core in every worker the cores are oversubscribed
    and its small ops spin: the vLLM negative controls took 103 s on 2 workers and 2 cores,
    15 s with one thread each. numpy, imported above, keeps OpenBLAS's default count, so the
    pin guard (tests/pinning.py) still compares 1 thread with the default. A value the user
    set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


_share_the_cores_between_workers()
TINY = ROOT / "trainer" / "configs" / "tiny_cpu.yaml"


def tiny_config(**fields):
    """trainer.config.tiny_config in memory (no run folder); ``fields`` set the sizes and
    anything else."""
    from trainer.config import tiny_config

    return tiny_config(**({"output_dir": "unused"} | fields))


def run_trainer(out, *overrides, flags=()):
    """``trainer/run.py`` in this process on the tiny config into ``out``; its exit status."""
    from trainer.run import main

    sets = [arg for override in overrides for arg in ("--set", override)]
    return main(["--config", str(TINY), "--no-progress", "--set", f"output_dir={out}", *sets, *flags])


def snapshot(folder):
    """Every file under ``folder`` (relative path -> bytes), but ``run.lock``, whose only content is
    the process id of the last run that held the folder."""
    folder = Path(folder)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "run.lock"]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


# Subprocesses import this checkout's packages, whichever copy of rlvr-lab is installed: a script
# run as ``python trainer/run.py`` has trainer/, not the repository root, first on sys.path.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def without_timings(metrics):
    """Metrics rows without their wall-clock entries (``time/...``), for run-to-run comparisons."""
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in metrics]


def run_module(*args, cwd=ROOT, env=None):
    """Run ``python -m <args>`` from the repository root, with ``env`` added to this process's
    environment; return the CompletedProcess."""
    environment = os.environ | (env or {})
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=environment
    )


@pytest.fixture(scope="session")
def variance_run(tmp_path_factory):
    """One quick run of ``python -m simulators.variance``, shared by the CLI and figure tests."""
    out = tmp_path_factory.mktemp("records")
    proc = run_module("simulators.variance", "--out", str(out), "--no-progress", "--seed", "7")
    return proc, out
