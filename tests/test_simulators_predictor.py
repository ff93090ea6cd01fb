"""The drifting-difficulty world and the V8-V10, V12 rows of simulators.predictor."""

import numpy as np
import pytest

from simulators import predictor
from simulators.registry import RunConfig, check_rng
from theory.predictor import GP_PRESETS, median_bandwidth

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


def test_released_gp_keeps_the_released_settings_and_scales_the_length_scale():
    """released_gp: the released preset with the length scale 0.27 taken as a fraction of the
    MiniLM median distance, so the same world at another scale gives the same predictions."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 6))
    gp, wide = predictor.released_gp(x), predictor.released_gp(10.0 * x)
    median = median_bandwidth(x, np.random.default_rng(0))
    assert gp.bandwidth == pytest.approx(0.27 * median / predictor.MINILM_MEDIAN_DISTANCE)
    assert wide.bandwidth == pytest.approx(10.0 * gp.bandwidth)
    assert {k: getattr(gp, k) for k in GP_PRESETS["released"] if k != "bandwidth"} == {
        k: v for k, v in GP_PRESETS["released"].items() if k != "bandwidth"
    }
    idx = np.arange(0, 200, 5)
    rewards = [np.where(rng.random(8) < 0.4, 1.0, 0.0) for _ in idx]
    for model in (gp, wide):
        model.update(idx, rewards)
    np.testing.assert_allclose(wide.predict(np.arange(200)), gp.predict(np.arange(200)), rtol=1e-4)
    assert predictor.released_gp(x, eps=0.05).eps == 0.05


def test_math_prompts_and_their_world():
    from simulators.math_prompts import TEMPLATES, generate_math_prompts

    rng = np.random.default_rng(4)
    texts, logits, kinds = generate_math_prompts(rng, 200)
    assert len(texts) == 200 and all(isinstance(t, str) and t for t in texts)
    assert set(kinds) <= set(range(len(TEMPLATES)))
    # harder templates have lower mean logits
    easiest, hardest = 0, len(TEMPLATES) - 1
    assert logits[kinds == easiest].mean() > logits[kinds == hardest].mean()

    def bag_of_characters(batch):  # a stand-in encoder, so the test needs no embed extra
        return np.array([[t.count(c) for c in "0123456789+xdr"] for t in batch], dtype=float)

    world = predictor.math_prompt_world(rng, 200, 10, bag_of_characters)
    assert world.embeddings.shape == (200, 14)
    assert np.all((world.p() > 0) & (world.p() < 1))
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate_math_prompts(rng, 0)
