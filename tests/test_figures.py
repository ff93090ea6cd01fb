"""figures read records only: values they need come from the record, and a figure without
its record names the command that writes one."""

import json

import pytest

from figures import __main__ as figures_cli
from figures import rl_study, variance
from figures.records import claims_of, load_records
from simulators.variance import NORM_DISTRIBUTIONS


def test_the_norm_variance_is_read_back_from_the_record(variance_run):
    _, records_dir = variance_run
    records, _ = load_records(records_dir)
    (check,) = [c for _, r in records for c in r["checks"] if c["name"] == "binary_rewards"]
    for claim, estimator in (("V1", "dr_grpo"), ("V2", "rloo")):
        cells = [c for c in variance._variance_cells(check, claim) if c["z_dist"] == variance.SHOWN_Z]
        expected = NORM_DISTRIBUTIONS[variance.SHOWN_Z].var()
        assert variance._sigma_z2(cells, estimator) == pytest.approx(expected, rel=1e-12)


def _write(path, checks):
    path.write_text(json.dumps({"created": "20300101T000000.000000Z", "checks": checks}))


def test_a_missing_record_is_answered_with_the_command_that_writes_it(tmp_path):
    partial = {"name": "binary_rewards", "claims": ["V1", "V2"], "results": [{"claim": "V1"}]}
    _write(tmp_path / "only.json", [partial])
    records, _ = load_records(tmp_path)
    assert claims_of(records, "binary_rewards") == ["V1", "V2"]
    assert figures_cli.how_to_record(variance, ["binary_rewards"], records, tmp_path) == (
        f"run `python -m simulators --only V1,V2 --out {tmp_path}`"
    )
    # no entry at all: the ids are not guessed (figures do not import the registry)
    message = figures_cli.how_to_record(variance, ["token_policy"], records, tmp_path)
    assert message.startswith(f"run `python -m simulators --out {tmp_path}`") and "--list" in message
    assert figures_cli.how_to_record(rl_study, ["rl_study_kl", "rl_study_loss"], records, tmp_path).startswith(
        f"run `python -m rl_study kl loss --out {tmp_path}`"
    )
