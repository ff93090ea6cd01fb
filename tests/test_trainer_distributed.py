"""The multi-process code path (torchrun + FSDP2) on CPU with the gloo backend, 2 processes."""

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, TINY, snapshot, without_timings
from trainer.config import load_config, save_config
from trainer.logs import read_jsonl


def _run_torchrun(out, *overrides, procs=2, flags=(), timeout=600):
    """``torchrun --nproc_per_node procs trainer/run.py`` on the tiny config into ``out``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "trainer/run.py"]
    cmd += ["--config", str(TINY), "--no-progress", "--set", f"output_dir={out}"]
    cmd += [a for o in overrides for a in ("--set", o)] + list(flags)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _torchrun(out, *overrides, resume=False, procs=2):
    proc = _run_torchrun(out, *overrides, procs=procs, flags=["--resume"] if resume else [])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_jsonl(out / "metrics.jsonl")


def test_two_processes_learn_and_log_every_rollout(tmp_path):
    """150 steps on 2 ranks (32 rollouts each): the reward rises as in one process, every
    rollout of the step is in the log, and rank 0 alone writes."""
    metrics = _torchrun(tmp_path, "steps=150", "learning_rate=0.002", "allocation=vip", "save_every=50")
    rewards = np.array([m["reward/mean"] for m in metrics])
    first, last = rewards[:30], rewards[-30:]
    z = (last.mean() - first.mean()) / np.sqrt((first.var(ddof=1) + last.var(ddof=1)) / 30)
    assert last.mean() > first.mean() + 0.08 and z > 4, f"{first.mean():.3f} -> {last.mean():.3f}, z = {z:.1f}"
    rows = read_jsonl(tmp_path / "rollouts.jsonl")
    assert len(rows) == 150 * 64 and len(metrics) == 150
    for m in metrics:
        assert sum(int(n) * c for n, c in m["allocation/histogram"].items()) == 64


def test_two_process_resume_continues_the_same_run(tmp_path):
    """Stop a 2-rank run at its step-10 checkpoint and resume it: steps 11-16 equal those of a
    run that never stopped (every rank restores its own sampling generator)."""
    common = (
        "save_every=10",
        "allocation=vip",
        "ppo_epochs=2",
        "mini_batches=2",
        "kl_coef=0.01",
        "kl_clip=fixed",
        "activation_checkpointing=true",
    )
    whole = _torchrun(tmp_path / "whole", "steps=16", *common)
    _torchrun(tmp_path / "cut", "steps=10", *common)
    resumed = _torchrun(tmp_path / "cut", "steps=16", *common, resume=True)
    assert without_timings(resumed) == without_timings(whole)


def test_two_process_checkpoint_loads_in_one_process(tmp_path):
    """The checkpoint holds the full (unsharded) model: evaluate.py reads it in one process."""
    _torchrun(tmp_path, "steps=2", "save_every=2")
    proc = subprocess.run(
        [
            sys.executable,
            "trainer/evaluate.py",
            "--config",
            str(TINY),
            "--set",
            "max_prompts=8",
            "--checkpoint",
            str(tmp_path / "checkpoints" / "step-2"),
            "--n",
            "2",
            "--k",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("budget=63",), "must be a multiple of the number of processes"),
        (("log_z_norm=true",), "log_z_norm needs a single process"),
    ],
)
def test_two_process_refusals(tmp_path, overrides, message):
    proc = _run_torchrun(tmp_path, *overrides, timeout=300)
    assert proc.returncode != 0 and message in proc.stderr + proc.stdout


def test_two_processes_stop_together_when_rank_0_refuses_the_folder(tmp_path):
    """Rank 0 alone checks the output folder; its refusal (a folder holding a run, no --resume)
    reaches rank 1 before any model loads, both exit, and the folder is as it was."""
    save_config(load_config(TINY, [f"output_dir={tmp_path}"]), tmp_path / "config.yaml")
    before = snapshot(tmp_path)
    proc = _run_torchrun(tmp_path, timeout=300)
    assert proc.returncode != 0 and proc.stderr.count(f"output_dir {tmp_path} holds a run (config.yaml)") == 1, (
        proc.stderr[-3000:]
    )
    assert snapshot(tmp_path) == before
