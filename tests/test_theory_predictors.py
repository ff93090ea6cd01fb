"""theory.predictors: one table of predictors, one predict -> allocate step, shared by the
trainer and the claim checks."""

import numpy as np
import pytest

from prompt_features import prompt_features
from simulators.allocation_peers import ARMS
from simulators.predictor import COMBOS
from theory.predictor import GP_PRESETS, median_bandwidth
from theory.predictors import MINILM_MEDIAN_DISTANCE, PREDICTORS, allocate_step, released_rescaled
from trainer.allocation import RolloutAllocator

TEXTS = [f"What is {a} + {b}?" for a in range(6) for b in range(5)]
BUDGET, LOWER, UPPER = 48, 3, 12


def _batches(rng, steps=3):
    for _ in range(steps):
        yield np.sort(rng.choice(len(TEXTS), size=6, replace=False))


def _rewards(rng, counts):
    return [np.where(rng.random(int(n)) < 0.4, 1.0, 0.0) for n in counts]


def _trainer_run(name, rule):
    allocator = RolloutAllocator(
        rule, TEXTS, BUDGET, LOWER, UPPER, "rloo", embedding="hashed", rng=np.random.default_rng(7), predictor=name
    )
    out, rng = [], np.random.default_rng(1)
    for idx in _batches(np.random.default_rng(2)):
        counts, p_hat = allocator.allocate(idx)
        out.append((counts, p_hat))
        allocator.observe(idx, _rewards(rng, counts))
    return out


def _table_run(name, rule):
    features, _ = prompt_features(TEXTS, "hashed")
    run_rng = np.random.default_rng(7)  # as the trainer's: the GP's bandwidth draws, then the rule's
    model = PREDICTORS[name].build(features, run_rng)
    out, rng = [], np.random.default_rng(1)
    for idx in _batches(np.random.default_rng(2)):
        counts, p_hat = allocate_step(rule, model, idx, BUDGET, LOWER, UPPER, "rloo", rng=run_rng)
        out.append((counts, p_hat))
        model.update(idx, _rewards(rng, counts))
    return out


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_each_name_gives_the_trainer_and_the_table_the_same_p_hat_and_counts(name):
    """The trainer's RolloutAllocator and a claim check's table entry + allocate_step, on the
    same prompts, rewards and seeds: the same p_hat and counts, step after step."""
    rule = "vip_posterior" if PREDICTORS[name].has_posterior else "vip"
    for (n_a, p_a), (n_b, p_b) in zip(_trainer_run(name, rule), _table_run(name, rule), strict=True):
        np.testing.assert_array_equal(n_a, n_b)
        np.testing.assert_array_equal(p_a, p_b)


def test_the_two_released_settings_are_two_predictors_on_features_of_another_scale():
    """Negative control, the pair that had drifted under one name: the release's fixed length
    scale and the rescaled one give different p_hat on hashed features."""
    fixed, rescaled = _table_run("gp_released", "vip"), _table_run("gp_released_rescaled", "vip")
    assert not np.allclose(fixed[-1][1], rescaled[-1][1])


def test_the_released_rescaled_gp_keeps_the_released_settings_and_scales_the_length_scale():
    """The released preset with 0.27 taken as a fraction of the MiniLM median distance, so the
    same world at another scale gives the same predictions."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 6))
    gp, wide = released_rescaled(x), released_rescaled(10.0 * x)
    median = median_bandwidth(x, np.random.default_rng(0))
    assert gp.bandwidth == pytest.approx(0.27 * median / MINILM_MEDIAN_DISTANCE)
    assert wide.bandwidth == pytest.approx(10.0 * gp.bandwidth)
    assert {k: getattr(gp, k) for k in GP_PRESETS["released"] if k != "bandwidth"} == {
        k: v for k, v in GP_PRESETS["released"].items() if k != "bandwidth"
    }
    idx = np.arange(0, 200, 5)
    rewards = [np.where(rng.random(8) < 0.4, 1.0, 0.0) for _ in idx]
    for model in (gp, wide):
        model.update(idx, rewards)
    np.testing.assert_allclose(wide.predict(np.arange(200)), gp.predict(np.arange(200)), rtol=1e-4)
    assert PREDICTORS["gp_released_rescaled_wide_clip"].build(x).eps == 0.05
    assert PREDICTORS["gp_released"].build(x).bandwidth == 0.27  # the release's, whatever the scale


def test_every_predictor_the_claim_checks_name_is_in_the_table():
    names = {pred for pred, _ in COMBOS.values()} | {arm.predictor for arm in ARMS.values()}
    assert names - {None, "oracle"} <= set(PREDICTORS)


def test_a_rule_that_needs_p_hat_refuses_no_predictor():
    with pytest.raises(ValueError, match="needs p_hat, so a predictor"):
        allocate_step("vip", None, np.arange(4), 16, 3, 8, "rloo")
    counts, p_hat = allocate_step("uniform", None, np.arange(4), 16, 3, 8, "rloo")
    assert counts.tolist() == [4, 4, 4, 4] and p_hat is None
