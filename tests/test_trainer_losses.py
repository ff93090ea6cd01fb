"""The trainer's torch losses against theory/importance.py on the same inputs: value and
gradient (objective_gradient), for every loss, and for token-level aggregation."""

import numpy as np
import pytest
import torch

from theory import importance
from theory.importance import CTPO_CLIP, GRPO_CLIP, GSPO_CLIP
from trainer.losses import (
    ClipSpec,
    ReleasedCumulativeRatioLoss,
    aggregation_weights,
    clip_fractions,
    kl_penalty,
    policy_loss,
)

CLIPS = {"grpo": ClipSpec(*GRPO_CLIP), "gspo": ClipSpec(*GSPO_CLIP), "ctpo": ClipSpec(*CTPO_CLIP)}
THEORY = {"grpo": importance.grpo_objective, "gspo": importance.gspo_objective, "ctpo": importance.ctpo_objective}


def _batch(seed, b=6, t=9, scale=0.3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    old = np.log(rng.uniform(0.05, 1.0, size=(b, t)))
    new = old + scale * rng.standard_normal((b, t))
    adv = rng.standard_normal(b)
    return new, old, mask, adv


def _theory_clip(name):
    c = CLIPS[name]
    return {"eps_low": c.low, "eps_high": c.high, **({"power": c.power} if name == "ctpo" else {})}


def _torch_loss(name, new, old, mask, adv, aggregation="sequence_mean"):
    logp = torch.tensor(new, dtype=torch.float64, requires_grad=True)
    m = torch.tensor(mask)
    w = aggregation_weights(m, aggregation, mask.shape[1], torch.float64)
    loss = policy_loss(name, logp, torch.tensor(old), m, torch.tensor(adv), w, CLIPS[name], mask.shape[0])
    loss.backward()
    return loss.item(), logp.grad.numpy()


@pytest.mark.parametrize("name", ["grpo", "gspo", "ctpo"])
@pytest.mark.parametrize("seed", range(4))
def test_loss_and_gradient_match_theory(name, seed):
    new, old, mask, adv = _batch(seed, scale=0.02 if name == "gspo" else 0.3)
    value, grad = _torch_loss(name, new, old, mask, adv)
    clip = _theory_clip(name)
    assert value == pytest.approx(-THEORY[name](new, old, mask, adv, **clip), rel=1e-12, abs=1e-12)
    expected = importance.objective_gradient(name, new, old, mask, adv, **clip)
    np.testing.assert_allclose(grad, -expected * mask, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["grpo", "ctpo"])
def test_token_mean_is_theory_with_length_weighted_advantages(name):
    """Token-level aggregation = the per-sequence objective with A_i scaled by B |o_i| / sum |o|
    (the clip depends on the sign of A only)."""
    new, old, mask, adv = _batch(11)
    lengths = mask.sum(1)
    value, _ = _torch_loss(name, new, old, mask, adv, "token_mean")
    scaled = adv * mask.shape[0] * lengths / lengths.sum()
    assert value == pytest.approx(-THEORY[name](new, old, mask, scaled, **_theory_clip(name)), rel=1e-12)


def test_wrong_clip_is_detected():
    """Negative control: CTPO's loss with GRPO's constant clip range is not CTPO's objective."""
    new, old, mask, adv = _batch(3, scale=0.5)
    logp = torch.tensor(new, requires_grad=True)
    m = torch.tensor(mask)
    w = aggregation_weights(m, "sequence_mean", mask.shape[1], torch.float64)
    wrong = policy_loss(
        "ctpo", logp, torch.tensor(old), m, torch.tensor(adv), w, ClipSpec(0.2, 0.2, 0.0), mask.shape[0]
    ).item()
    assert abs(wrong + importance.ctpo_objective(new, old, mask, adv)) > 1e-3


def test_micro_batches_add_up_to_the_mini_batch():
    new, old, mask, adv = _batch(5, b=8)
    m = torch.tensor(mask)
    w = aggregation_weights(m, "token_mean", mask.shape[1], torch.float64)

    def args(rows):
        return (
            torch.tensor(new[rows]),
            torch.tensor(old[rows]),
            m[rows],
            torch.tensor(adv[rows]),
            w[rows],
            CLIPS["ctpo"],
            8,
        )

    whole = policy_loss("ctpo", *args(slice(None))).item()
    parts = sum(policy_loss("ctpo", *args(slice(i, i + 3))).item() for i in range(0, 8, 3))
    assert parts == pytest.approx(whole, rel=1e-12)


def test_clip_fractions_at_the_behaviour_policy_are_zero_and_grow_with_drift():
    new, old, mask, _ = _batch(2, scale=0.5)
    m = torch.tensor(mask)
    at_old = clip_fractions(torch.tensor(old), torch.tensor(old), m, CLIPS)
    drifted = clip_fractions(torch.tensor(new), torch.tensor(old), m, CLIPS)
    assert set(at_old.values()) == {0.0}
    assert all(drifted[k] > 0 for k in CLIPS)


def test_kl_estimators_and_clip():
    seq_l = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(kl_penalty(seq_l, "k1", None), seq_l)
    np.testing.assert_allclose(kl_penalty(seq_l, "k2", None), seq_l**2 / 2)
    np.testing.assert_allclose(kl_penalty(seq_l, "k3", None), np.exp(-seq_l.numpy()) - 1 + seq_l.numpy(), rtol=1e-6)
    clipped = kl_penalty(seq_l, "k1", 1.0)
    np.testing.assert_allclose(clipped, [-1, -0.5, 0, 0.5, 1])
    assert (kl_penalty(seq_l, "k3", None) >= 0).all()
    with pytest.raises(ValueError, match="kl_estimator must be one of k1, k2, k3; got .k4."):
        kl_penalty(seq_l, "k4", None)


# --- CTPO on long responses ------------------------------------------------------------------------


def _issue_example(cap):
    """policy_loss('ctpo', zeros(1, 100), full(-1.0), ..., A) in float32: log rho_t^cum = t reaches 100."""
    logp = torch.zeros(1, 100, requires_grad=True)
    m = torch.ones(1, 100, dtype=torch.bool)
    w = aggregation_weights(m, "token_mean", 100)
    clip = ClipSpec(*CTPO_CLIP, log_ratio_cap=cap)
    return logp, lambda a: policy_loss("ctpo", logp, torch.full((1, 100), -1.0), m, torch.tensor([a]), w, clip, 1)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_ctpo_float32_loss_and_gradients_are_finite_past_exp_overflow(advantage):
    logp, loss_of = _issue_example(ClipSpec(*CTPO_CLIP).log_ratio_cap)
    loss = loss_of(advantage)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    # A > 0: rho_t^cum = e^t is above every bound e^(0.05 sqrt(t)), all clipped; A < 0: tokens up to the cap count
    assert bool((logp.grad[0, :30] != 0).all()) == (advantage < 0) and bool((logp.grad[0, 30:] == 0).all())


def test_uncapped_ctpo_float32_gradients_are_nan():
    """Negative control: exp of the cumulative log ratio overflows past 88 and the gradient is NaN."""
    logp, loss_of = _issue_example(float("inf"))
    loss_of(1.0).backward()
    assert torch.isnan(logp.grad).any()


@pytest.mark.parametrize("seed", range(3))
def test_ctpo_matches_theory_on_cumulative_log_ratios_up_to_1000(seed):
    rng = np.random.default_rng(seed)
    b, t = 6, 400
    lengths = rng.integers(t // 2, t + 1, size=b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    old = np.log(rng.uniform(0.05, 1.0, size=(b, t)))
    new = old + rng.choice([-2.5, 2.5], size=(b, 1)) + 0.3 * rng.standard_normal((b, t))
    adv = rng.standard_normal(b)
    assert np.abs(importance.log_cumulative_ratio(new, old, mask)).max() > 500
    value, grad = _torch_loss("ctpo", new, old, mask, adv)
    clip = _theory_clip("ctpo")
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert value == pytest.approx(-importance.ctpo_objective(new, old, mask, adv, **clip), rel=1e-12, abs=1e-12)
    expected = importance.objective_gradient("ctpo", new, old, mask, adv, **clip)
    np.testing.assert_allclose(grad, -expected * mask, rtol=1e-10, atol=1e-12)


# --- CTPO as released: theory.importance.ctpo_released_objective ------------------------------------


def _released_batch(regime, seed):
    """Eight rows with both signs of A: on-policy, off-policy, or "extreme": token log ratios drifting
    by +1.5 (log rho_t^cum passes 10 from t = 7 on) and, in every other row, one of -25 (clamped to -20)."""
    new, old, mask, _ = _batch(seed, b=8, t=12, scale={"on-policy": 0.0, "off-policy": 0.3, "extreme": 0.3}[regime])
    adv = np.resize([1.0, -1.0], 8) * np.random.default_rng(seed).uniform(0.2, 2.0, 8)
    if regime == "extreme":
        mask[:, :10] = True
        new = new + 1.5
        new[::2, 1] = old[::2, 1] - 25.0
    return new, old, mask, adv


def _released_torch(new, old, mask, adv, loss, clip):
    logp = torch.tensor(new, dtype=torch.float64, requires_grad=True)
    m = torch.tensor(mask)
    w = aggregation_weights(m, "token_mean", mask.shape[1], torch.float64)
    value = loss.loss(logp, torch.tensor(old), m, torch.tensor(adv), w, clip, mask.shape[0])
    value.backward()
    return value.item(), logp.grad.numpy()


# the release's constants, and wide clips under which the cap at 10 decides whether a term has a gradient
RELEASED = {"eps_low": CTPO_CLIP[0], "eps_high": CTPO_CLIP[1], "power": CTPO_CLIP[2], "dual_clip": 0.05}
WIDE = {"eps_low": 5.0, "eps_high": 5.0, "power": 0.5, "dual_clip": 5.0}


@pytest.mark.parametrize("regime", ["on-policy", "off-policy", "extreme"])
@pytest.mark.parametrize("params", [RELEASED, WIDE], ids=["released", "wide"])
@pytest.mark.parametrize("seed", range(3))
def test_ctpo_released_loss_and_gradient_match_theory(regime, params, seed):
    new, old, mask, adv = _released_batch(regime, seed)
    loss = ReleasedCumulativeRatioLoss(CTPO_CLIP[:2], "test", dual_clip=params["dual_clip"])
    value, grad = _released_torch(
        new, old, mask, adv, loss, ClipSpec(params["eps_low"], params["eps_high"], params["power"])
    )
    assert value == pytest.approx(-importance.ctpo_released_objective(new, old, mask, adv, **params), rel=1e-12)
    expected = importance.objective_gradient("ctpo_released", new, old, mask, adv, **params)
    np.testing.assert_allclose(grad, -expected * mask, rtol=1e-10, atol=1e-14)
    if params is WIDE or regime != "extreme":  # the release's clip stops every extreme term
        assert np.any(expected > 0) and np.any(expected < 0)  # both signs of A carry gradient


@pytest.mark.parametrize("seed", range(3))
def test_the_released_clamps_bind_in_the_extreme_regime(seed):
    """The inputs of the test above reach the clamp at +-20 and, with wide clips, the cap at 10: both
    change the reference's value and gradient, which the torch loss matches."""
    new, old, mask, adv = _released_batch("extreme", seed)
    log_r = np.where(mask, new - old, 0.0)
    assert np.abs(log_r[mask]).max() > 20
    for clamp in ({"token_log_ratio_clamp": np.inf}, {"log_ratio_cap": np.inf}):
        changed = importance.objective_gradient("ctpo_released", new, old, mask, adv, **WIDE, **clamp)
        assert (
            np.abs(changed - importance.objective_gradient("ctpo_released", new, old, mask, adv, **WIDE)).max() > 1e-6
        )


def test_ctpo_released_dual_clip_stops_negative_advantages_above_its_threshold():
    """A < 0 and rho_t^cum = e^0.2 at t = 1 (above e^0.05): the paper's surrogate keeps the gradient
    A rho, the release holds the term at A e^0.05 with no gradient; A > 0 is clipped by both."""
    old, new, mask = np.zeros((2, 1)), np.full((2, 1), 0.2), np.ones((2, 1), dtype=bool)
    adv = np.array([-1.0, 1.0])
    value, grad = _torch_released(new, old, mask, adv)
    assert grad.tolist() == [[0.0], [0.0]]
    assert value == pytest.approx(-(-np.exp(0.05) + np.exp(0.05)) / 2)
    paper = importance.objective_gradient("ctpo", new, old, mask, adv, detach_prefix=True)
    assert paper[0, 0] == pytest.approx(-np.exp(0.2) / 2) and paper[1, 0] == 0.0


def _torch_released(new, old, mask, adv):
    return _released_torch(new, old, mask, adv, ReleasedCumulativeRatioLoss(CTPO_CLIP[:2], "test"), CLIPS["ctpo"])


@pytest.mark.parametrize("regime", ["on-policy", "off-policy"])
def test_the_papers_surrogate_gradient_is_not_the_released_one(regime):
    """Negative control: the ``ctpo`` loss (the paper's surrogate, differentiated through every prefix
    ratio) on the same batch misses the released reference at every token with a later token."""
    new, old, mask, adv = _released_batch(regime, 0)
    _, surrogate = _torch_loss("ctpo", new, old, mask, adv, "token_mean")
    released = -importance.objective_gradient("ctpo_released", new, old, mask, adv)
    later = mask & np.roll(mask, -1, axis=1)
    later[:, -1] = False
    assert np.abs(surrogate - released)[later].min() > 1e-6
