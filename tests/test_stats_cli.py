"""The rollout log, ``python -m stats_tests LOG``, the shipped example log and the V11
calibration check with its figures."""

import json

import numpy as np
import pytest

from simulators import stats_calibration
from simulators.example_rollouts import DEFAULT_OUT, simulate_rollout_log
from stats_tests.rollout_log import REQUIRED, SCHEMA, groups_by_step, read_rollout_log, write_rollout_log
from tests.conftest import run_module


def test_rollout_log_round_trip_and_grouping(tmp_path):
    rows = simulate_rollout_log(np.random.default_rng(3), steps=2, prompts=3)
    path = write_rollout_log(tmp_path / "log.jsonl", rows)
    back = read_rollout_log(path)
    assert back == rows
    assert set(rows[0]) == set(SCHEMA)
    steps = groups_by_step(back)
    assert sorted(steps) == [0, 1]
    rewards, norms = steps[1]
    assert len(rewards) == 3
    assert sum(r.size for r in rewards) == sum(1 for r in rows if r["step"] == 1)
    assert [z.size for z in norms] == [r.size for r in rewards]


def test_whole_number_floats_are_read_as_integers(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 2.0, "prompt_id": 7.0, "rollout": 1.0, "reward": 1, "z_norm": 1, "p_hat": null}\n')
    (row,) = read_rollout_log(path)
    assert (row["step"], row["prompt_id"], row["rollout"]) == (2, 7, 1) and isinstance(row["step"], int)


def test_a_log_concatenated_with_itself_is_refused(tmp_path):
    """`cat log log`: every (step, prompt_id, rollout) twice; merged, each group would double."""
    lines = DEFAULT_OUT.read_text().splitlines()
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text("\n".join(lines + lines) + "\n")
    first = json.loads(lines[0])
    key = rf"\(step {first['step']}, prompt_id '{first['prompt_id']}', rollout 0\)"
    with pytest.raises(ValueError, match=rf"doubled.jsonl:{len(lines) + 1}: duplicate of .*doubled.jsonl:1 {key}"):
        read_rollout_log(doubled)
    proc = run_module("stats_tests", str(doubled))
    assert proc.returncode == 2 and "duplicate of" in proc.stderr and proc.stdout == ""


def test_parquet_log_nulls_and_duplicates(tmp_path):
    import pandas as pd  # with pyarrow, installed by the trainer extra's datasets

    rows = read_rollout_log(DEFAULT_OUT)
    path = tmp_path / "log.parquet"
    pd.DataFrame(rows).to_parquet(path)  # p_hat of step 0 is null: pandas reads it back as NaN
    back = read_rollout_log(path)
    assert back == rows
    pd.DataFrame(rows + rows[:1]).to_parquet(path)
    with pytest.raises(ValueError, match=rf"log.parquet row {len(rows)}: duplicate of .*log.parquet row 0"):
        read_rollout_log(path)


def test_a_huge_norm_gives_finite_p_values_not_nan(tmp_path):
    """z_norm = 1e160: its square overflows; the variance tests rescale Z by a power of two
    (exact, W is scale-free), so every p-value is a number in [0, 1]."""
    rows = read_rollout_log(DEFAULT_OUT)
    rows[5]["z_norm"] = 1e160
    out = tmp_path / "result.json"
    proc = run_module("stats_tests", str(write_rollout_log(tmp_path / "huge.jsonl", rows)), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "nan" not in proc.stdout.lower()
    for tests in json.loads(out.read_text())["steps"].values():
        assert all(0.0 <= t["pvalue"] <= 1.0 for t in tests.values())


@pytest.mark.pinned
def test_shipped_example_is_the_simulators_output():
    """Every field but z_norm exactly; z_norm = ||H(o)||_2 to 1e-12 relative, because numpy's
    float64 exp has its own AVX-512 code, 1 ulp off libm's on some inputs (20 of the 960 norms
    differ by 2e-16 relative with numpy's AVX-512 dispatch turned off)."""
    shipped, simulated = read_rollout_log(DEFAULT_OUT), simulate_rollout_log(np.random.default_rng(0))
    assert len(shipped) == len(simulated) == 960
    assert [{k: v for k, v in row.items() if k != "z_norm"} for row in shipped] == [
        {k: v for k, v in row.items() if k != "z_norm"} for row in simulated
    ]
    np.testing.assert_allclose([r["z_norm"] for r in shipped], [r["z_norm"] for r in simulated], rtol=1e-12, atol=0)


def _line(**changes) -> str:
    """A rollout-log line with valid required fields, some of them changed."""
    return json.dumps({"step": 0, "prompt_id": "a", "rollout": 0, "reward": 1.0, "z_norm": 1.0} | changes)


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"step": 0, "prompt_id": "a", "rollout": 0, "reward": 1.0}', "missing field"),
        ('{"step": 0, "prompt_id": "a", "rollout": 0, "reward": NaN, "z_norm": 1.0}', "reward must be a finite number"),
        (_line(z_norm="x"), "z_norm must be a finite number >= 0"),
        (_line(z_norm=-0.5), r"z_norm must be a finite number >= 0 \(a gradient norm\); got -0.5"),
        (_line(step=1.5), "step must be an integer >= 0; got 1.5"),
        (_line(step=-1), "step must be an integer >= 0; got -1"),
        (_line(step=True), "step must be an integer >= 0; got True"),
        (_line(rollout=0.5), "rollout must be an integer >= 0; got 0.5"),
        (_line(prompt_id=2.5), "prompt_id must be a string or an integer; got 2.5"),
        (_line(reward=float("inf")), "reward must be a finite number; got inf"),
        (_line(response_length=-3), "response_length must be an integer >= 0; got -3"),
        (_line(n_allocated=0), "n_allocated must be an integer >= 1; got 0"),
        (_line(p_hat=1.5), r"p_hat must be null or a probability in \[0, 1\]; got 1.5"),
        ("[1, 2]", "not a JSON object; got list"),
        ("not json", "not a JSON object"),
    ],
)
def test_bad_log_lines_name_the_line_and_field(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=match) as info:
        read_rollout_log(path)
    assert "bad.jsonl:1" in str(info.value)
    assert set(REQUIRED) <= set(SCHEMA)


def test_cli_on_the_example_log(tmp_path):
    out = tmp_path / "result.json"
    proc = run_module("stats_tests", str(DEFAULT_OUT), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(table) == 3  # one row per step of the example
    result = json.loads(out.read_text())
    for tests in result["steps"].values():
        assert set(tests) == {"fisher", "edgington", "levene", "obrien"}
        assert all(0.0 <= t["pvalue"] <= 1.0 for t in tests.values())


def test_cli_errors(tmp_path):
    assert run_module("stats_tests", str(tmp_path / "missing.jsonl")).returncode == 2
    assert run_module("stats_tests", str(DEFAULT_OUT), "--alpha", "1.5").returncode == 2


def test_cli_reports_a_test_that_cannot_run(tmp_path):
    # every prompt has constant rewards: the correlation tests cannot run, the variance tests can
    rows = [
        {"step": 0, "prompt_id": q, "rollout": j, "reward": 1.0, "z_norm": float(np.sin(q + 3 * j) + 2)}
        for q in range(3)
        for j in range(5)
    ]
    proc = run_module("stats_tests", str(write_rollout_log(tmp_path / "flat.jsonl", rows)))
    assert proc.returncode == 0, proc.stderr
    assert "fisher: rewards/norms: no usable group" in proc.stdout


def test_size_row_verdicts():
    cell = {"Q": 10, "n": 5, "reps": 400, "rates": {"t": {"rate": 0.05, "z": 0.0, "ci95": [0.03, 0.08]}}}
    bad = {"Q": 10, "n": 5, "reps": 400, "rates": {"t": {"rate": 0.3, "z": 22.9, "ci95": [0.25, 0.35]}}}
    assert stats_calibration.size_row("claim", "x", [cell], "t").ok
    assert not stats_calibration.size_row("claim", "x", [cell, bad], "t").ok
    assert stats_calibration.size_row("control", "x", [bad], "t").ok
    assert not stats_calibration.size_row("control", "x", [cell], "t").ok


def test_calibration_passes_and_its_figures_regenerate(tmp_path):
    records, out = tmp_path / "records", tmp_path / "figures"
    proc = run_module("simulators.stats_calibration", "--out", str(records), "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = records.glob("*.json")
    rows = json.loads(record.read_text())["checks"][0]["results"]
    kinds = {(r["kind"], r["verdict"]) for r in rows}
    assert ("claim", "PASS") in kinds and ("control", "REJECTED") in kinds
    proc = run_module("figures", "--records", str(records), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {"stats_size.png", "stats_power.png"} <= {p.name for p in out.glob("*.png")}
