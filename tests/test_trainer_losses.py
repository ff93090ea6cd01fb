"""The trainer's torch losses against theory/importance.py on the same inputs: value and
gradient (objective_gradient), for every loss, and for token-level aggregation."""

import numpy as np
import pytest
import torch

from theory import importance
from theory.importance import CTPO_CLIP, GRPO_CLIP, GSPO_CLIP
from trainer.losses import ClipSpec, aggregation_weights, clip_fractions, kl_penalty, policy_loss

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
