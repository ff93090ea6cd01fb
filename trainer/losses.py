"""The clipped policy losses (GRPO, GSPO, CTPO) and the clipped KL penalty, in torch.

The surrogates are theory.importance's objectives written for autograd; tests/test_trainer_losses
checks value and gradient against ``grpo_objective``, ``gspo_objective``, ``ctpo_objective``
and ``objective_gradient`` on the same inputs. CTPO's bounds e^(-eps_low t^p), e^(eps_high t^p)
come from ``theory.importance.adaptive_clip_bounds``, and its cumulative ratio is
e^(min(log rho_t^cum, log_ratio_cap)) as in ``theory.importance.ctpo_objective``: the cap keeps the
loss and every gradient finite on responses of thousands of tokens (float32's exp overflows past
88) and leaves them unchanged wherever log rho_t^cum <= cap or the clip binds (that docstring).

Aggregation (how token terms are averaged; ``weights``):
- ``token_mean`` (DAPO, Dr. GRPO's code): every real token of the mini-batch counts equally,
  sum over tokens / number of tokens, so long answers are not down-weighted;
- ``sequence_mean`` (the GRPO and CTPO papers' 1/G sum_i 1/|o_i| sum_t, = theory's objectives);
- ``constant`` (Dr. GRPO's paper): sum over tokens / (sequences x max_new_tokens).
GSPO's ratio is per sequence, so GSPO always averages over sequences.

KL (RLHF-gen §6.1): the response's log ratio l = log pi_theta(o|q) - log pi_ref(o|q) is clipped
to l^tau = clip(l, -tau, tau) and fed to Schulman's estimators k1 = l, k2 = l^2 / 2,
k3 = e^(-l) - 1 + l; the penalty is beta times their mean over sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from theory.importance import CTPO_LOG_RATIO_CAP, adaptive_clip_bounds


@dataclass(frozen=True)
class ClipSpec:
    low: float  # eps_low
    high: float  # eps_high
    power: float = 0.5  # CTPO's p
    log_ratio_cap: float = CTPO_LOG_RATIO_CAP  # CTPO's cap on log rho_t^cum; inf: none


def aggregation_weights(mask: torch.Tensor, aggregation: str, max_new_tokens: int, dtype=torch.float32, tokens=None, sequences=None) -> torch.Tensor:
    """(R, T) weights w with loss = -sum w * term over the mini-batch (see the module docstring).
    ``tokens`` and ``sequences`` are the mini-batch's totals when ``mask`` holds only part of it
    (one rank's rows); by default, those of ``mask``."""
    mask = mask.to(dtype)
    tokens = mask.sum() if tokens is None else tokens
    sequences = mask.shape[0] if sequences is None else sequences
    if aggregation == "token_mean":
        return mask / tokens
    if aggregation == "sequence_mean":
        return mask / mask.sum(1, keepdim=True) / sequences
    if aggregation == "constant":
        return mask / (sequences * max_new_tokens)
    raise ValueError(f"aggregation must be one of token_mean, sequence_mean, constant; got {aggregation!r}")


def _surrogate(ratio, adv, low, high):
    return torch.minimum(ratio * adv, torch.clamp(ratio, low, high) * adv)


def _ctpo_bounds(width: int, clip: ClipSpec, like: torch.Tensor):
    low, high = adaptive_clip_bounds(np.arange(1, width + 1), clip.low, clip.high, clip.power)
    return like.new_tensor(low)[None, :], like.new_tensor(high)[None, :]


def log_ratio(logp_new, logp_old, mask):
    """log r_t at real tokens, 0 at padding."""
    return torch.where(mask, logp_new - logp_old, torch.zeros_like(logp_new))


def policy_loss(name: str, logp_new, logp_old, mask, advantages, weights, clip: ClipSpec, sequences: int):
    """-(clipped surrogate) of ``name`` for a micro-batch: ``weights`` come from
    :func:`aggregation_weights` over the whole mini-batch and ``sequences`` is its size, so the
    micro-batches' losses add up to the mini-batch's."""
    log_r = log_ratio(logp_new, logp_old, mask)
    adv = advantages[:, None]
    if name == "grpo":
        terms = _surrogate(log_r.exp(), adv, 1.0 - clip.low, 1.0 + clip.high)
    elif name == "ctpo":
        low, high = _ctpo_bounds(mask.shape[1], clip, logp_new)
        terms = _surrogate(log_r.cumsum(1).clamp(max=clip.log_ratio_cap).exp(), adv, low, high)
    elif name == "gspo":
        lengths = mask.sum(1)
        rho = (log_r.sum(1) / lengths).exp()
        per_sequence = _surrogate(rho, advantages, 1.0 - clip.low, 1.0 + clip.high)
        return -per_sequence.sum() / sequences
    else:
        raise ValueError(f"loss must be one of grpo, gspo, ctpo; got {name!r}")
    return -(torch.where(mask, terms, torch.zeros_like(terms)) * weights).sum()


@torch.no_grad()
def clip_fractions(logp_new, logp_old, mask, clips: dict) -> dict:
    """The fraction of real tokens whose ratio lies outside each method's clip range (GSPO: of
    sequences). ``clips`` maps method name -> ClipSpec; all three are cheap, so all are logged."""
    log_r = log_ratio(logp_new, logp_old, mask)
    out = {}
    if "grpo" in clips:
        c = clips["grpo"]
        r = log_r.exp()
        out["grpo"] = float(((r < 1 - c.low) | (r > 1 + c.high))[mask].float().mean())
    if "ctpo" in clips:
        low, high = _ctpo_bounds(mask.shape[1], clips["ctpo"], logp_new)
        rho = log_r.cumsum(1).exp()
        out["ctpo"] = float(((rho < low) | (rho > high))[mask].float().mean())
    if "gspo" in clips:
        c = clips["gspo"]
        rho = (log_r.sum(1) / mask.sum(1)).exp()
        out["gspo"] = float(((rho < 1 - c.low) | (rho > 1 + c.high)).float().mean())
    return out


def sequence_log_ratio(logp_new, logp_ref, mask):
    """l_i = sum_t log pi_theta(o_t) - log pi_ref(o_t) over the real tokens of each rollout."""
    return log_ratio(logp_new, logp_ref, mask).sum(1)


def kl_penalty(seq_log_ratio, estimator: str, tau: float | None):
    """Per-sequence k1/k2/k3 of l^tau = clip(l, -tau, tau) (no clip when ``tau`` is None)."""
    l = seq_log_ratio if tau is None else seq_log_ratio.clamp(-tau, tau)
    if estimator == "k1":
        return l
    if estimator == "k2":
        return 0.5 * l**2
    if estimator == "k3":
        return torch.expm1(-l) + l
    raise ValueError(f"kl_estimator must be one of k1, k2, k3; got {estimator!r}")
