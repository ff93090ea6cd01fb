"""The RL study as a slow claim set (`make test-slow`): every comparison end to end at a
reduced size (2 seeds, 20 RL steps, 200 warm-up steps; about 2 minutes on 2 cores). The
full-size study is `make study`; its records are committed in results/rl_study."""

import json
import math
import subprocess
import sys

import pytest

from rl_study.comparisons import COMPARISONS
from tests.conftest import ROOT
from trainer.losses import LOSSES

CLAIMS = {"allocation": "V10", "allocation_dr_grpo": "V10", "loss": "C8", "loss_long": "C8", "kl": "R12"}


@pytest.mark.slow
def test_every_comparison_of_the_study_runs_and_is_reported(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "rl_study",
        "--seeds",
        "2",
        "--steps",
        "20",
        "--warmup-steps",
        "200",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for comparison, claim in CLAIMS.items():
        record = json.loads(next(tmp_path.glob(f"rl_study_{comparison}-*.json")).read_text())
        rows = record["checks"][0]["results"]
        assert {r["claim"] for r in rows} == {claim} and all(r["verdict"] == "REPORT" for r in rows)
        details = [r["details"] for r in rows]
        assert len(details) == len(COMPARISONS[comparison]["methods"])
        for d in details:
            assert len(d["reward_curve_mean"]) == 20 and len(d["train/mean@8_per_seed"]) == 2
            assert all(
                0 <= d[f"{s}/{k}"] <= 1 for s in ("test", "train") for k in ("pass@1", "pass@8", "mean@8", "maj@8")
            )
            assert math.isfinite(d["train/gain_over_start"]) and math.isfinite(d["train/gain_over_start_ci95"])
            assert set(d["clip_fractions"]) == set(LOSSES) and all(0 <= v <= 1 for v in d["clip_fractions"].values())
            # the same evaluation seed on an unchanged model gives the start's numbers exactly, so RL
            # must change them where it has a signal: a start with no success has only zero-variance
            # groups, hence zero advantages (loss_long after 200 warm-up steps)
            start = d["train/start_mean@8_per_seed"]
            if comparison != "loss_long":
                assert any(v > 0 for v in start)
            if any(v > 0 for v in start):
                assert d["train/mean@8_per_seed"] != start
    runs = [json.loads(p.read_text()) for p in (tmp_path / "rl_study" / "allocation_dr_grpo").glob("*.json")]
    assert {r["config"]["advantage"] for r in runs} == {"dr_grpo"}
    assert {r["config"].get("predictor") for r in runs if r["method"].startswith("ridge")} == {"ridge"}
