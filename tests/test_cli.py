"""The claims runner: exit codes, the JSON record, --only, --list, determinism; the figures CLI."""

import json
import shutil
from datetime import datetime

import pytest

from figures.records import load_records, newest_check
from simulators import cli, ledger, registry
from tests.conftest import run_module


def _row(kind, ok, claim="X1"):
    """A row of ``kind`` whose verdict is ``ok`` (a claim that holds, a control that does not)."""
    if kind == "report":
        return ledger.report(claim, "w")
    holds = ok if kind == "claim" else not ok
    return ledger.decided(kind, claim, "w", at_most=0.0, statistic=0.0 if holds else 1.0, stat_name="set by the test")


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
    assert [
        _row(k, ok).verdict
        for k, ok in [("claim", True), ("claim", False), ("control", True), ("control", False), ("report", True)]
    ] == [
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


def test_records_of_the_same_second_never_overwrite_each_other(tmp_path, monkeypatch):
    class FrozenClock:
        @staticmethod
        def now(tz):
            return datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=tz)

    monkeypatch.setattr(ledger, "datetime", FrozenClock)
    paths = [ledger.write_record(tmp_path, "claims", {"run": k}, 0, []) for k in range(3)]
    stem = "claims-20300102T030405.000006Z-seed0"
    assert [p.name for p in paths] == [f"{stem}.json", f"{stem}-2.json", f"{stem}-3.json"]
    assert [json.loads(p.read_text())["config"] for p in paths] == [{"run": 0}, {"run": 1}, {"run": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary file left


def test_two_records_written_back_to_back_are_two_files(tmp_path):
    first = ledger.write_record(tmp_path, "claims", {"run": 1}, 0, [])
    second = ledger.write_record(tmp_path, "claims", {"run": 2}, 0, [])
    assert first != second
    assert [json.loads(p.read_text())["config"] for p in (first, second)] == [{"run": 1}, {"run": 2}]


def _record(path, created, results):
    record = {"created": created, "checks": [{"name": "binary_rewards", "claims": ["V1", "V2"], "results": results}]}
    path.write_text(json.dumps(record))


def test_newest_check_passes_over_a_newer_partial_entry(tmp_path):
    old_rows = [{"claim": "V1", "id": "old"}, {"claim": "V2", "id": "old"}]
    _record(tmp_path / "full.json", "20300101T000000.000000Z", old_rows)
    _record(tmp_path / "only.json", "20300102T000000.000000Z", [{"claim": "V1", "id": "new"}])
    records, warnings = load_records(tmp_path)
    assert warnings == []
    assert {r["id"] for r in newest_check(records, "binary_rewards")["results"]} == {"old"}
    (tmp_path / "full.json").unlink()
    assert newest_check(load_records(tmp_path)[0], "binary_rewards") is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[1, 2]", "a JSON list, not an object"),
        ('{"alpha": 0.05, "steps": {}}', "no 'checks' list"),
        ("{broken", "not a readable JSON file"),
    ],
)
def test_a_foreign_json_file_is_skipped_with_a_warning(tmp_path, text, reason):
    (tmp_path / "foreign.json").write_text(text)
    records, warnings = load_records(tmp_path)
    assert records == [] and len(warnings) == 1
    assert str(tmp_path / "foreign.json") in warnings[0] and reason in warnings[0]


def test_figures_after_an_only_run_and_with_foreign_files(variance_run, tmp_path):
    """README's `--only` example writes a partial record into the folder of a full one; foreign
    JSON files lie next to them. Each figure draws from the newest complete record."""
    _, full = variance_run
    records, out = tmp_path / "records", tmp_path / "figures"
    shutil.copytree(full, records)
    proc = run_module("simulators", "--only", "V1", "--out", str(records), "--no-progress", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    (records / "foreign.json").write_text("[1, 2]")
    (records / "stats.json").write_text('{"alpha": 0.05, "steps": {}}')
    before = sorted(p.name for p in records.iterdir())
    proc = run_module("figures", "--records", str(records), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("variance_vs_n", "variance_violation_map", "variance_real_gradient"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert f"skipped {records / 'foreign.json'}: not a ledger record" in proc.stderr
    assert f"skipped {records / 'stats.json'}: not a ledger record" in proc.stderr
    assert sorted(p.name for p in records.iterdir()) == before  # nothing removed or renamed

    # with the partial record alone, the figures it cannot feed are skipped, naming the run to do
    only = tmp_path / "only"
    only.mkdir()
    for path in records.glob("claims-*.json"):
        shutil.copy(path, only)
    proc = run_module("figures", "--records", str(only), "--out", str(tmp_path / "none"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "variance_vs_n: no record in" in proc.stderr
    assert "run `python -m simulators --only V1,V2 --out" in proc.stderr


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--out", "{file}/records"], "--out: cannot write into"),
    ],
)
def test_bad_seed_or_out_is_refused_before_any_check_runs(tmp_path, monkeypatch, capsys, argv, match):
    ran = []
    check = registry.Check("counts_runs", ("X1",), lambda config, rng: ran.append(1) or [_row("claim", True)], "test")
    monkeypatch.setattr(registry, "checks_for", lambda topics: [("test", check)])
    (tmp_path / "file").write_text("keep me")
    argv = [a.format(file=tmp_path / "file") for a in argv]
    with pytest.raises(SystemExit) as info:
        cli.main(argv + (["--out", str(tmp_path / "records")] if "--out" not in argv else []))
    assert info.value.code == 2 and match in capsys.readouterr().err
    assert ran == [] and (tmp_path / "file").read_text() == "keep me"
    assert cli.main(["--out", str(tmp_path / "records")]) == 0 and ran == [1]  # the same check runs with good arguments
