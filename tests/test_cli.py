"""The claims runner: exit codes, the JSON record, --only, --list, determinism; the figures CLI."""

import json

import pytest

from simulators import cli, ledger, registry
from simulators.ledger import ClaimResult
from tests.conftest import run_module


def _row(kind, ok, claim="X1"):
    return ClaimResult(claim, kind, "w", 1.0, 0.1, 1.0, 0.0, "z", ok)


def test_topic_cli_passes_and_writes_record(variance_run):
    proc, out = variance_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "V1" in proc.stdout and "REJECTED" in proc.stdout and "REPORT" in proc.stdout
    (path,) = out.glob("variance-*.json")
    record = json.loads(path.read_text())
    assert record["seed"] == 7 and record["package"] == "rlvr-lab"
    assert {c["name"] for c in record["checks"]} == {check.name for _, check in registry.checks_for(("variance",))}
    for check in record["checks"]:
        assert check["seconds"] > 0
        assert all(r["verdict"] in ("PASS", "REJECTED", "REPORT") for r in check["results"])


def test_only_selects_rows_and_is_deterministic(tmp_path):
    a = run_module("simulators", "--only", "V3", "--out", str(tmp_path / "a"), "--no-progress", "--seed", "3")
    b = run_module("simulators", "--only", "V3", "--out", str(tmp_path / "b"), "--no-progress", "--seed", "3")
    assert a.returncode == 0 and b.returncode == 0
    rec_a = json.loads(next((tmp_path / "a").glob("*.json")).read_text())
    rec_b = json.loads(next((tmp_path / "b").glob("*.json")).read_text())
    rows_a = [r for c in rec_a["checks"] for r in c["results"]]
    assert rows_a and {r["claim"] for r in rows_a} == {"V3"}
    assert rows_a == [r for c in rec_b["checks"] for r in c["results"]]


def test_unknown_claim_id_is_a_usage_error(tmp_path):
    proc = run_module("simulators", "--only", "V99", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown claim id(s) V99" in proc.stderr


def test_list(capsys):
    assert cli.main(["--list"]) == 0
    assert "variance.binary_rewards" in capsys.readouterr().out


@pytest.mark.parametrize(
    "rows, failed",
    [
        ([_row("claim", True), _row("control", True), _row("report", True)], False),
        ([_row("claim", False)], True),
        ([_row("control", False)], True),
        ([_row("report", True)], False),
    ],
)
def test_run_failed(rows, failed):
    assert ledger.run_failed(rows) is failed


def test_cli_exit_status_when_a_claim_fails(tmp_path, monkeypatch, capsys):
    failing = registry.Check("always_fails", ("X1",), lambda config, rng: [_row("claim", False)], "test")
    monkeypatch.setattr(registry, "checks_for", lambda topics: [("test", failing)])
    assert cli.main(["--out", str(tmp_path)], topics=("variance",)) == 1
    assert "FAIL" in capsys.readouterr().out


def test_verdict_names():
    assert [_row(k, ok).verdict for k, ok in [("claim", True), ("claim", False), ("control", True), ("control", False), ("report", True)]] == [
        "PASS",
        "FAIL",
        "REJECTED",
        "NOT REJECTED",
        "REPORT",
    ]
    with pytest.raises(ValueError, match="kind must be one of"):
        _row("guess", True)


def test_figures_from_record(variance_run, tmp_path):
    _, records = variance_run
    proc = run_module("figures", "--records", str(records), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for name in ("variance_vs_n", "variance_violation_map", "variance_real_gradient"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000


def test_figures_without_records(tmp_path):
    proc = run_module("figures", "--records", str(tmp_path))
    assert proc.returncode == 1 and "no usable record" in proc.stderr
    proc = run_module("figures", "--records", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
