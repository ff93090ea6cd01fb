"""The ledger decides verdicts: the z threshold rule, explicit rules, refused constructions, the table's width."""

import json
import math

import numpy as np
import pytest

from simulators import cli, ledger
from simulators.ledger import BOUNDS, Z_THRESHOLD, ClaimResult, claim, control, report

JUST_BELOW = math.nextafter(Z_THRESHOLD, 0.0)


@pytest.mark.parametrize(
    "measured, holds",
    [
        ({"z": JUST_BELOW}, True),
        ({"z": -JUST_BELOW}, True),
        ({"z": Z_THRESHOLD}, False),
        ({"z": -Z_THRESHOLD}, False),
        ({"max_abs_z": JUST_BELOW}, True),
        ({"max_abs_z": Z_THRESHOLD}, False),
        ({"min_abs_z": Z_THRESHOLD}, False),
        ({"z": -50.0, "z_test": "not greater"}, True),
        ({"z": Z_THRESHOLD, "z_test": "not greater"}, False),
        ({"z": Z_THRESHOLD, "z_test": "greater"}, True),
        ({"z": JUST_BELOW, "z_test": "greater"}, False),
    ],
)
def test_a_z_statistic_gets_its_verdict_from_the_ledger_threshold(measured, holds):
    passed, rejected = claim("X1", "w", **measured), control("X1", "w", **measured)
    assert passed.holds is holds and rejected.holds is holds
    assert passed.verdict == ("PASS" if holds else "FAIL")
    assert rejected.verdict == ("NOT REJECTED" if holds else "REJECTED")
    assert f"< {Z_THRESHOLD:g}" in passed.rule or f">= {Z_THRESHOLD:g}" in passed.rule


def test_a_control_with_a_small_z_is_not_rejected_and_fails_the_run():
    row = control("X1", "a wrong formula the check cannot tell apart", max_abs_z=1.5, estimate=1.0, se=0.1, theory=1.15)
    assert row.verdict == "NOT REJECTED" and not row.ok
    assert ledger.run_failed([claim("X1", "w", max_abs_z=0.5), row])


def test_a_bound_is_judged_and_worded_by_the_ledger():
    row = claim("X1", "w", at_most=1e-12, statistic=np.float64(1e-13), stat_name="max rel")
    assert row.verdict == "PASS"
    assert {k: row.to_json()[k] for k in ("rule", "holds", "ok", "verdict")} == {
        "rule": "max rel <= 1e-12",
        "holds": True,
        "ok": True,
        "verdict": "PASS",
    }


@pytest.mark.parametrize(
    "keyword, statistic, holds",
    [
        ("at_most", 1.0, True),
        ("at_most", 1.0 + 1e-15, False),
        ("below", 1.0, False),
        ("below", 1.0 - 1e-15, True),
        ("at_least", 1.0, True),
        ("at_least", 1.0 - 1e-15, False),
        ("above", 1.0, False),
        ("above", 1.0 + 1e-15, True),
    ],
)
def test_each_bound_holds_exactly_on_its_side(keyword, statistic, holds):
    row = control("X1", "w", **{keyword: 1.0}, statistic=statistic, stat_name="s")
    assert row.holds is holds and row.verdict == ("NOT REJECTED" if holds else "REJECTED")
    assert row.rule == f"s {BOUNDS[keyword][0]} 1"


def test_a_nan_statistic_neither_passes_nor_rejects():
    assert claim("X1", "w", z=float("nan")).verdict == "FAIL"
    assert control("X1", "w", max_abs_z=float("nan")).verdict == "NOT REJECTED"
    assert control("X1", "w", below=1.0, statistic=float("nan"), stat_name="s").verdict == "NOT REJECTED"
    assert claim("X1", "w", at_least=0.0, statistic=float("nan"), stat_name="s").verdict == "FAIL"


@pytest.mark.parametrize(
    "measured, match",
    [
        ({}, "give exactly one of z=, max_abs_z=, min_abs_z="),
        ({"z": 1.0, "max_abs_z": 1.0}, "give exactly one of"),
        ({"z": 1.0, "at_most": 1.0, "statistic": 0.5, "stat_name": "s"}, "give exactly one of"),
        ({"at_most": 1.0, "below": 2.0, "statistic": 0.5, "stat_name": "s"}, "give exactly one of"),
        ({"at_most": 1.0, "stat_name": "s"}, "at_most= bounds statistic=, named by stat_name="),
        ({"below": 1.0, "statistic": 0.5}, "below= bounds statistic=, named by stat_name="),
        ({"z": 1.0, "z_test": "less"}, "z_test must be one of equal, not greater, greater; got 'less'"),
        ({"max_abs_z": 1.0, "z_test": "greater"}, "z_test='greater' applies to z= only"),
        (
            {"at_most": 1.0, "statistic": 0.5, "stat_name": "s", "z_test": "not greater"},
            "z_test='not greater' applies to z= only",
        ),
        ({"z": 1.0, "statistic": 3.0, "stat_name": "mine"}, "pass statistic=/stat_name= only with a bound"),
    ],
)
def test_a_row_without_one_clear_rule_is_refused(measured, match):
    with pytest.raises(ValueError, match=match):
        claim("X1", "w", **measured)


def test_a_bound_is_worded_with_every_digit_it_needs():
    assert (
        claim("X1", "w", at_least=1.0 - 1e-9, statistic=1.01, stat_name="min ratio").rule == "min ratio >= 0.999999999"
    )
    assert claim("X1", "w", at_least=-1e-9, statistic=0.0, stat_name="min").rule == "min >= -1e-09"


def test_a_check_cannot_judge_its_own_row():
    """holds= and rule= are the ledger's to set: a row gives a z or a bound on a statistic."""
    with pytest.raises(TypeError, match="holds"):
        claim("X1", "w", holds=True, rule="r")
    with pytest.raises(TypeError, match="rule"):
        claim("X1", "w", at_most=1.0, statistic=0.5, stat_name="s", rule="mine")


def test_rows_are_built_by_keyword_only():
    with pytest.raises(TypeError):
        ClaimResult("X1", "claim", "w", 1.0, 0.1, 1.0, 0.0, "z", True)
    with pytest.raises(TypeError, match="ok"):
        claim("X1", "w", z=0.0, ok=True)
    with pytest.raises(ValueError, match="a report has no pass/fail"):
        ClaimResult(claim="X1", kind="report", what="w", holds=True)


def _what_column(table: str) -> list[str]:
    """The "what was compared" text of every row, its wrapped lines joined."""
    header, _, *lines = table.splitlines()
    start, end = header.index("what was compared"), header.index("estimate ± SE")
    texts = []
    for line in lines:
        piece = line[start:end].strip()
        if line[:start].strip():
            texts.append(piece)
        else:
            texts[-1] += " " + piece
    return texts


def test_table_fits_120_columns_and_the_record_keeps_the_full_text(tmp_path, capsys):
    assert cli.main(["--only", "V3,V7", "--out", str(tmp_path), "--no-progress"]) == 0
    table = capsys.readouterr().out.split("\n\nrecord:")[0]
    (path,) = tmp_path.glob("claims-*.json")
    rows = [r for check in json.loads(path.read_text())["checks"] for r in check["results"]]
    assert max(len(line) for line in table.splitlines()) <= ledger.TABLE_WIDTH
    assert any(len(r["what"]) > 70 for r in rows)  # a text wider than its column: it wraps
    assert len(table.splitlines()) > len(rows) + 2
    assert _what_column(table) == [" ".join(r["what"].split()) for r in rows]


def test_numeric_columns_stay_aligned_when_the_text_wraps():
    rows = [claim("X1", "word " * 60, z=1.0, estimate=1.0, se=0.1, theory=1.0), report("X2", "short", estimate=2.0)]
    table = ledger.format_table(rows)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= ledger.TABLE_WIDTH
    estimate = lines[0].index("estimate ± SE")
    firsts = [line for line in lines[2:] if line.startswith(("X1", "X2"))]
    assert [line[estimate:].split("  ")[0] for line in firsts] == ["1 ± 0.1", "2"]
    assert _what_column(table) == [" ".join(("word " * 60).split()), "short"]
