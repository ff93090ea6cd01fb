"""The drifting-difficulty world and the V8-V10, V12 rows of simulators.predictor."""

import numpy as np
import pytest

from simulators import predictor
from simulators.registry import RunConfig, check_rng

QUICK = RunConfig(full=False, progress=False)


def test_world_drifts_and_batches_cover_an_epoch():
    rng = np.random.default_rng(0)
    world = predictor.DriftingWorld.random(rng, 300, steps=20)
    p0 = world.p()
    assert np.all((p0 > 0) & (p0 < 1))
    world.advance()
    assert not np.allclose(world.p(), p0)
    seen = np.concatenate(list(predictor.batches(rng, 300, 50, 6)))
    assert np.array_equal(np.sort(seen), np.arange(300))  # one epoch: every prompt once


def test_rollouts_follow_the_allocation():
    rng = np.random.default_rng(1)
    world = predictor.DriftingWorld.random(rng, 50)
    idx = np.arange(5)
    rewards = world.rollouts(rng, idx, np.array([3, 4, 5, 6, 7]))
    assert [len(r) for r in rewards] == [3, 4, 5, 6, 7]
    assert all(set(np.unique(r)) <= {-1.0, 1.0} for r in rewards)


def test_loop_is_reproducible():
    a = predictor.loop_run(123, 200, 20, 5)
    b = predictor.loop_run(123, 200, 20, 5)
    assert a == b
    assert set(a) == set(predictor.COMBOS)


@pytest.mark.parametrize("check", predictor.CHECKS, ids=lambda c: c.name)
def test_predictor_rows(check):
    rows = check.run(QUICK, check_rng(3, check.name))
    for row in rows:
        assert row.ok, f"{row.claim} {row.kind}: {row.what}"
    if check.name != "gp_overhead":
        assert any(r.kind == "claim" for r in rows)
    if check.name in ("predictor_mae", "allocation_loop"):  # the released GP beside the paper's
        assert any(predictor.RELEASED in r.what for r in rows if r.kind == "report")
