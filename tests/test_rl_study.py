"""rl_study.tasks (generated families with known difficulty), rl_study.warmup, and the RL study
(``python -m rl_study``) at toy size."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rl_study.cli import main
from rl_study.comparisons import COMPARISONS
from rl_study.tasks import FAMILIES, generate_tasks, split, task_tokenizer
from rl_study.warmup import supervised_warmup
from tests.conftest import ROOT
from trainer.models import tiny_model
from trainer.rewards import same_answer


def _check(task) -> bool:
    q = task.question.rstrip("=")
    if task.family == "rev":
        return task.answer == q[1:][::-1]
    a, b = (int(x) for x in q.replace("+", " ").replace("-", " ").replace("*", " ").replace("%", " ").split())
    value = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "mod": lambda: a % b}[task.family]()
    return same_answer(str(value), task.answer)


def test_tasks_are_correct_distinct_seeded_and_tokenisable():
    tasks = generate_tasks(500, np.random.default_rng(3))
    assert all(_check(t) for t in tasks)
    assert len({t.question for t in tasks}) == 500 and {t.family for t in tasks} == set(FAMILIES)
    assert tasks == generate_tasks(500, np.random.default_rng(3))
    tok = task_tokenizer()
    assert all(tok.unk_token_id not in tok(t.question + t.answer)["input_ids"] for t in tasks)


def test_sizes_override_a_family_and_are_checked():
    tasks = generate_tasks(200, np.random.default_rng(0), families=("rev",), sizes={"rev": range(8, 17)})
    assert all(_check(t) for t in tasks) and {t.size for t in tasks} == set(range(8, 17))
    assert all(len(t.answer) == t.size for t in tasks)
    with pytest.raises(ValueError, match="sizes must be non-empty and >= 1"):
        generate_tasks(5, np.random.default_rng(0), sizes={"rev": ()})


def test_split_is_disjoint_and_renumbered():
    train, test = split(generate_tasks(200, np.random.default_rng(0)), 0.25, np.random.default_rng(1))
    assert (len(train), len(test)) == (150, 50)
    assert not {t.question for t in train} & {t.question for t in test}
    assert [t.prompt_id for t in test] == list(range(50))
    with pytest.raises(ValueError, match="test_fraction must lie in"):
        split(train, 1.0, np.random.default_rng(0))


def test_warmup_lowers_the_answer_loss():
    tok = task_tokenizer()
    tasks = generate_tasks(64, np.random.default_rng(0), families=("add",))
    losses = supervised_warmup(tiny_model("qwen2", len(tok)), tok, tasks, 60, torch.Generator().manual_seed(0))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_study_runs_resumes_and_writes_a_record(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "rl_study",
        "kl",
        "--seeds",
        "2",
        "--steps",
        "2",
        "--warmup-steps",
        "5",
        "--jobs",
        "2",
        "--out",
        str(tmp_path),
    ]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    runs = sorted((tmp_path / "rl_study" / "kl").glob("*.json"))
    assert len(runs) == 6 and len(list((tmp_path / "rl_study" / "warmup").glob("start-*.json"))) == 2
    stamp = {p: p.stat().st_mtime_ns for p in runs}
    again = subprocess.run(
        cmd[:-4] + ["--jobs", "1", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and all(p.stat().st_mtime_ns == stamp[p] for p in runs)  # finished runs are reused
    record = json.loads(sorted(tmp_path.glob("rl_study_kl-*.json"))[-1].read_text())
    rows = record["checks"][0]["results"]
    assert [r["details"]["method"] for r in rows] == ["no_clip", "fixed_tau", "tau_star"] and {
        r["claim"] for r in rows
    } == {"R12"}
    assert all(len(r["details"]["reward_curve_mean"]) == 2 for r in rows)
    assert "test/paired_diff_p" in rows[1]["details"] and "train/gain_over_start_ci95" in rows[0]["details"]
    subset = subprocess.run(cmd + ["--methods", "tau_star"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert subset.returncode == 0 and all(p.stat().st_mtime_ns == stamp[p] for p in runs)
    record = json.loads(sorted(tmp_path.glob("rl_study_kl-*.json"))[-1].read_text())
    assert [r["details"]["method"] for r in record["checks"][0]["results"]] == ["no_clip", "tau_star"]
    figures = subprocess.run(
        [sys.executable, "-m", "figures", "--records", str(tmp_path), "--out", str(tmp_path / "fig")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert figures.returncode == 0 and (tmp_path / "fig" / "rl_study_kl.png").exists(), figures.stderr[-2000:]


def test_study_runs_do_not_depend_on_the_number_of_workers(tmp_path):
    """The same study from 2 worker processes and from 1: identical curves and metrics."""
    results = {}
    for jobs in (1, 2):
        cmd = [
            sys.executable,
            "-m",
            "rl_study",
            "loss",
            "--seeds",
            "2",
            "--steps",
            "2",
            "--warmup-steps",
            "5",
            "--jobs",
            str(jobs),
            "--out",
            str(tmp_path / str(jobs)),
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs = [json.loads(p.read_text()) for p in sorted((tmp_path / str(jobs) / "rl_study" / "loss").glob("*.json"))]
        results[jobs] = [(r["method"], r["seed"], r["reward_curve"], r["test"], r["train"]) for r in runs]
    assert len(results[1]) == 2 * len(COMPARISONS["loss"]["methods"]) and results[1] == results[2]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--seeds", "1"], "--seeds must be >= 2 (the intervals and paired tests are over seeds); got 1"),
        (["kl", "--jobs", "0"], "--jobs must be >= 1; got 0"),
        (["klx"], "COMPARISON must be one of allocation, allocation_dr_grpo, loss, loss_long, kl; got klx"),
        (["kl", "--methods", "grpo"], "--methods must name methods of kl (fixed_tau, no_clip, tau_star); got grpo"),
    ],
)
def test_bad_study_arguments_are_refused_before_any_run(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as info:
        main(argv + ["--out", str(tmp_path)])
    assert info.value.code == 2 and match in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was trained or written
