"""V5-V7: the relaxed solver against cvxpy, Algorithm 2 against the exact optimum, their controls."""

import numpy as np
import pytest

from simulators import allocation
from simulators.allocation_oracle import cvxpy_relaxed
from simulators.registry import RunConfig, check_rng
from theory.allocation import relaxed_allocation, success_variance_weights, total_objective

QUICK = RunConfig(full=False, progress=False)


@pytest.mark.parametrize("estimator", ["dr_grpo", "rloo"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relaxed_agrees_with_cvxpy(estimator, seed):
    rng = np.random.default_rng(seed)
    a = success_variance_weights(rng.random(20))
    oracle = cvxpy_relaxed(a, 200, 3, 32, estimator)
    ours = total_objective(a, relaxed_allocation(a, 200, 3, 32, estimator), estimator)
    assert oracle.certified_gap < 1e-8
    assert ours == pytest.approx(oracle.upper_bound, rel=1e-6)
    assert ours <= oracle.upper_bound * (1 + 1e-9)  # never worse than the oracle's feasible point


@pytest.mark.parametrize("check", allocation.CHECKS, ids=lambda c: c.name)
def test_allocation_rows(check):
    rows = check.run(QUICK, check_rng(5, check.name))
    kinds = {r.kind for r in rows}
    assert "claim" in kinds and kinds & {"control", "report"}
    for row in rows:
        assert row.ok, f"{row.claim} {row.kind}: {row.what}"


def test_kkt_residual_detects_a_non_kkt_point():
    a = success_variance_weights(np.array([0.5, 0.2, 0.9, 0.4]))
    good = relaxed_allocation(a, 40, 3, 32, "rloo")
    assert allocation.kkt_residual(a, good, 3, 32, "rloo") < 1e-9
    assert allocation.kkt_residual(a, np.full(4, 10.0), 3, 32, "rloo") > 0.1


def test_vip_beats_the_heuristics_at_equal_budget():
    rng = np.random.default_rng(4)
    p = rng.beta(0.3, 0.3, size=256)
    allocations = allocation.rule_allocations(p, 8 * 256, "rloo")
    assert {n.sum() for n in allocations.values()} == {8 * 256}
    totals = {rule: np.sum(allocation.gradient_variance("rloo", n, p=p)) for rule, n in allocations.items()}
    assert totals["VIP"] < min(v for k, v in totals.items() if k != "VIP")
