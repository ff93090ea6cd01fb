"""scripts/gpu_smoke.py runs its checks on a CPU too (so it cannot rot on machines without a GPU)."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_smoke_script_passes_on_cpu():
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/gpu_smoke.py",
            "--device",
            "cpu",
            "--steps",
            "4",
            "--prompts",
            "4",
            "--new-tokens",
            "8",
            "--hidden",
            "64",
            "--layers",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["failures"] == [] and report["step_s_median"] > 0 and report["generated_tokens_per_s"] > 0
    assert report["resume_max_reward_gap"] == 0.0  # on a CPU the resumed steps replay exactly
