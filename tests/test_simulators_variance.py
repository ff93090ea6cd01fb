"""The V1-V4 checks: every claim row holds, every negative control is rejected, at quick size."""

import numpy as np
import pytest

from simulators import variance
from simulators.ledger import ClaimResult
from simulators.registry import RunConfig, check_rng

QUICK = RunConfig(full=False, progress=False)


@pytest.fixture(scope="module")
def rows():
    """Every row of the variance topic at quick size (about 7 s)."""
    out = {}
    for check in variance.CHECKS:
        out[check.name] = check.run(QUICK, check_rng(11, check.name))
    return out


@pytest.mark.parametrize("check", [c.name for c in variance.CHECKS])
def test_claims_hold_and_controls_rejected(rows, check):
    results = rows[check]
    assert results, "a check must produce rows"
    for row in results:
        assert isinstance(row, ClaimResult)
        if row.kind == "claim":
            assert row.ok, f"{row.claim} failed: {row.what} (max|z| = {row.statistic})"
            assert row.statistic < 4
        elif row.kind == "control":
            assert row.ok, f"negative control not rejected: {row.what}"
            assert row.statistic >= 4


def test_every_check_has_a_negative_control_or_a_report(rows):
    for name, results in rows.items():
        assert {r.kind for r in results} & {"control", "report"}, name


def test_printed_rloo_is_rejected_where_it_differs(rows):
    # The 1/n baseline of VIP §4 coincides with Prop 4.3 only when E[R] = 0 and n is large;
    # at n = 3 and p = 0.1 it must be rejected in every norm distribution.
    control = next(r for r in rows["binary_rewards"] if r.kind == "control")
    cells = [c for c in control.details["cells"] if c["n"] == 3 and c["p"] == 0.1]
    assert cells and all(abs(c["z_var"]) >= 4 for c in cells)


def test_degenerate_p_is_exact(rows):
    claim = next(r for r in rows["binary_rewards"] if r.claim == "V1" and r.details["stat"] == "z_var")
    for cell in claim.details["cells"]:
        if cell["p"] in (0.0, 1.0):
            assert cell["var"] == 0.0 and cell["z_var"] == 0.0


def test_violation_map_sign(rows):
    # Positive correlation at small p inflates Var(G) over Prop 4.2; at rho = 0 the map is flat.
    report = next(r for r in rows["correlated_rewards"] if r.kind == "report")
    cells = report.details["map"]
    at = {(c["estimator"], c["n"], c["p"], c["rho_latent"]): c for c in cells}
    assert at[("dr_grpo", 16, 0.1, 0.6)]["rel_dev_var"] > 0.5
    assert all(abs(c["rel_dev_var"]) < 1e-12 for c in cells if c["rho_latent"] == 0.0)


def test_copula_moments_are_consistent():
    m = variance.copula_moments(0.3, 0.0)
    # independence: E[R Z] = E[R] E[Z]
    assert m[(1, 1)] == pytest.approx(m[(1, 0)] * m[(0, 1)])
    assert m[(1, 0)] == pytest.approx(2 * 0.3 - 1)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal(400_000)
    x2 = 0.5 * x1 + np.sqrt(0.75) * rng.standard_normal(400_000)
    r = np.where(x1 > variance.stats.norm.ppf(0.7), 1.0, -1.0)
    z = np.exp(variance.COPULA_LOG_SD * x2)
    m = variance.copula_moments(0.3, 0.5)
    assert np.mean(r * z**2) == pytest.approx(m[(1, 2)], abs=4 * np.std(r * z**2) / np.sqrt(4e5))


def test_same_seed_same_rows():
    check = variance.CHECKS[1]
    a = check.run(QUICK, check_rng(5, check.name))
    b = check.run(QUICK, check_rng(5, check.name))
    assert [r.to_json() for r in a] == [r.to_json() for r in b]


def test_chunking_covers_every_group():
    assert sum(variance.chunked_groups(1_000_001, 64)) == 1_000_001
    assert max(variance.chunked_groups(1_000_001, 64)) * 64 <= variance.MAX_CHUNK
