"""The RLHF world is exact and the bounds checks give verdicts that could fail."""

import numpy as np
import pytest

from simulators import bound_rows, bounds, bounds_trained
from simulators.registry import RunConfig
from simulators.rlhf_world import make_world
from tests.conftest import run_module

QUICK = RunConfig(full=False, progress=False)


def test_world_identity_reward_shift_is_expected_reward_error():
    """J^phi - J* = E_{D_theta}[r_hat - r*] (the KL terms cancel), to rounding."""
    world = make_world(np.random.default_rng(1), distance=1.5)
    gap = world.objective(world.r_hat, 0.7, None) - world.objective(world.r_star, 0.7, None)
    assert gap == pytest.approx(float(np.sum(world.d_theta * (world.r_hat - world.r_star))), abs=1e-12)


def test_clipping_error_is_excess_over_tau():
    """|l - l^tau| = (|l| - tau)_+ on every pair."""
    world = make_world(np.random.default_rng(2), distance=3.0)
    ell, tau = world.log_ratio, 1.0
    assert np.allclose(np.abs(ell - np.clip(ell, -tau, tau)), np.maximum(np.abs(ell) - tau, 0.0))


def test_sampled_responses_follow_pi_theta():
    world = make_world(np.random.default_rng(3), prompts=3, responses=4)
    prompts, responses = world.sample(1, 20_000, 1, np.random.default_rng(4))
    freq = np.bincount(responses.ravel(), minlength=4) / responses.size
    assert np.allclose(freq, world.pi_theta[prompts[0, 0]], atol=0.02)


def test_reward_model_fit_is_informative():
    """The Bradley-Terry fit recovers r* better than a constant 1/2 on D_train."""
    world = make_world(np.random.default_rng(5), pairs=4000)
    constant = float(np.sum(world.d_train * (0.5 - world.r_star) ** 2))
    assert world.l_train() < 0.5 * constant


def test_sampling_check_passes_claims_and_rejects_both_controls():
    rows = bounds.run_sampling(QUICK, np.random.default_rng(0))
    controls = [r for r in rows if r.kind == "control"]
    assert controls and all(r.ok and r.statistic >= 4 for r in controls)
    assert all(r.ok for r in rows if r.kind == "claim")


def test_violation_row_fails_a_claim_when_the_bound_is_too_small():
    errors = np.abs(np.random.default_rng(0).normal(size=4000))
    row = bound_rows.violation_row("R4", "claim", "too small", errors, bound=0.1, details={})
    assert not row.ok and row.statistic > 4


def test_exact_check_holds():
    assert all(r.ok for r in bounds.run_exact(QUICK, np.random.default_rng(0)))


def test_tau_check_holds_and_reports_every_cell():
    rows = bounds.run_tau(QUICK, np.random.default_rng(0))
    claim = next(r for r in rows if r.kind == "claim")
    cells = next(r for r in rows if r.kind == "report").details["cells"]
    assert claim.ok
    assert len(cells) == len(bounds.DISTANCES) * len(bounds.TAU_CELLS)
    assert all(0 < c["tau_actual_best"] for c in cells)  # some clipping or none: never tau = 0 in these worlds
    assert all(c["tau_star_mean"] == 0.0 for c in cells if 2 * c["alpha"] >= 1)


def test_equal_cost_mse_prefers_one_rollout_without_prefill_cost():
    mse = bounds.equal_cost_mse(0.1, 0.5, 0.0, bounds.K_GRID)
    assert np.argmin(mse) == 0
    assert bounds.equal_cost_mse(0.1, 0.5, bounds.BUDGET, np.array([1]))[0] == np.inf  # no prompt fits


def test_budget_check_holds_and_rejects_the_wrong_variance():
    rows = bounds.run_budget(QUICK, np.random.default_rng(0))
    assert all(r.ok for r in rows)
    assert {r.claim for r in rows} == {"R14", "R15", "R16"}
    assert any(r.kind == "control" and r.statistic >= 4 for r in rows)


def test_ou_check_holds_and_rejects_the_missing_half():
    rows = bounds_trained.run_ou(QUICK, np.random.default_rng(0))
    assert all(r.ok for r in rows)
    control = next(r for r in rows if r.kind == "control")
    assert control.statistic >= 4


def test_commuting_pair_commutes():
    _, _, _, hess, sigma_g = bounds_trained._commuting_pair(np.random.default_rng(0))
    assert np.allclose(hess @ sigma_g, sigma_g @ hess)


def test_pac_bayes_check_holds_and_selection_is_optimistic():
    rows = bounds_trained.run_pac_bayes(QUICK, np.random.default_rng(0))
    assert {r.claim for r in rows} == {"R9", "R10"} and all(r.ok for r in rows)
    optimism = next(r for r in rows if r.kind == "report").estimate
    assert optimism > 0  # choosing the best J_hat on the same sample biases it upwards


def test_bounds_figures_regenerate(tmp_path):
    """The three bounds figures draw from a quick record of the topic."""
    records, out = tmp_path / "records", tmp_path / "figures"
    run = run_module("simulators.bounds", "--out", str(records), "--no-progress")
    assert run.returncode == 0, run.stderr
    proc = run_module("figures", "--records", str(records), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("bounds_tightness", "bounds_tau_rule", "bounds_budget_rule"):
        assert (out / f"{name}.png").stat().st_size > 1000
