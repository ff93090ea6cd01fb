"""The clipped policy losses (GRPO, GSPO, CTPO) and the clipped KL penalty, in torch.

The surrogates are theory.importance's objectives written for autograd; tests/test_trainer_losses
checks value and gradient against ``grpo_objective``, ``gspo_objective``, ``ctpo_objective``
and ``objective_gradient`` on the same inputs. CTPO's bounds e^(-eps_low t^p), e^(eps_high t^p)
come from ``theory.importance.adaptive_clip_bounds``, and its cumulative ratio is
e^(min(log rho_t^cum, log_ratio_cap)) as in ``theory.importance.ctpo_objective``: the cap keeps the
loss and every gradient finite on responses of thousands of tokens (float32's exp overflows past
88) and leaves them unchanged wherever log rho_t^cum <= cap or the clip binds (that docstring).
``ctpo_released`` is the loss of CTPO's released code, ``theory.importance.ctpo_released_objective``:
the same clip, token log ratios clamped to +-20, log rho_t^cum capped at 10, a dual clip for
negative advantages, and a gradient through the current token only (the prefix ratio is held
constant, Prop 1's estimator); ``ctpo`` is the paper's surrogate J_CTPO (§3.3), differentiated whole.

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

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from theory import checks
from theory.importance import (
    CTPO_LOG_RATIO_CAP,
    RELEASED_DUAL_CLIP,
    RELEASED_LOG_RATIO_CAP,
    RELEASED_TOKEN_LOG_RATIO_CLAMP,
    adaptive_clip_bounds,
    dual_clip_threshold,
)
from trainer.option_names import LOSS_CLIPS
from trainer.registry import choose


@dataclass(frozen=True)
class ClipSpec:
    low: float  # eps_low
    high: float  # eps_high
    power: float = 0.5  # CTPO's p
    log_ratio_cap: float = CTPO_LOG_RATIO_CAP  # ctpo's cap on log rho_t^cum (inf: none); ctpo_released has its own


def _token_mean(mask, tokens, sequences, max_new_tokens):
    return mask / tokens


def _sequence_mean(mask, tokens, sequences, max_new_tokens):
    return mask / mask.sum(1, keepdim=True) / sequences


def _constant(mask, tokens, sequences, max_new_tokens):
    return mask / (sequences * max_new_tokens)


# name -> weights(mask, tokens, sequences, max_new_tokens) (see the module docstring)
AGGREGATIONS = {"token_mean": _token_mean, "sequence_mean": _sequence_mean, "constant": _constant}


def aggregation_weights(
    mask: torch.Tensor, aggregation: str, max_new_tokens: int, dtype=torch.float32, tokens=None, sequences=None
) -> torch.Tensor:
    """(R, T) weights w with loss = -sum w * term over the mini-batch (see the module docstring).
    ``tokens`` and ``sequences`` are the mini-batch's totals when ``mask`` holds only part of it
    (one rank's rows); by default, those of ``mask``."""
    mask = mask.to(dtype)
    tokens = mask.sum() if tokens is None else tokens
    sequences = mask.shape[0] if sequences is None else sequences
    return choose(AGGREGATIONS, aggregation, "aggregation")(mask, tokens, sequences, max_new_tokens)


def _surrogate(ratio, adv, low, high):
    return torch.minimum(ratio * adv, torch.clamp(ratio, low, high) * adv)


def log_ratio(logp_new, logp_old, mask):
    """log r_t at real tokens, 0 at padding."""
    return torch.where(mask, logp_new - logp_old, torch.zeros_like(logp_new))


class PolicyLoss(ABC):
    """A clipped policy loss: its importance ratio, its clip bounds and its surrogate
    min(rho A, clip(rho, low, high) A). Token losses weigh their terms by
    :func:`aggregation_weights`; a sequence loss (``per_sequence``) averages over sequences."""

    per_sequence = False

    def __init__(self, default_clip: tuple[float, float], summary: str):
        self.default_clip, self.summary = default_clip, summary

    @abstractmethod
    def ratio(self, log_r, mask, clip: ClipSpec):
        """rho: (R, T) per token, or (R,) per sequence."""

    def bounds(self, clip: ClipSpec, width: int, like: torch.Tensor):
        """(low, high), broadcastable against :meth:`ratio`."""
        return 1.0 - clip.low, 1.0 + clip.high

    def loss(self, logp_new, logp_old, mask, advantages, weights, clip: ClipSpec, sequences: int):
        """-(clipped surrogate) for a micro-batch: ``weights`` come from
        :func:`aggregation_weights` over the whole mini-batch and ``sequences`` is its size, so
        the micro-batches' losses add up to the mini-batch's."""
        rho = self.ratio(log_ratio(logp_new, logp_old, mask), mask, clip)
        low, high = self.bounds(clip, mask.shape[1], logp_new)
        if self.per_sequence:
            return -self.surrogate(rho, advantages, low, high, clip).sum() / sequences
        terms = self.surrogate(rho, advantages[:, None], low, high, clip)
        return -(torch.where(mask, terms, torch.zeros_like(terms)) * weights).sum()

    def surrogate(self, rho, adv, low, high, clip: ClipSpec):
        """The terms min(rho A, clip(rho, low, high) A)."""
        return _surrogate(rho, adv, low, high)

    @torch.no_grad()
    def clip_fraction(self, logp_new, logp_old, mask, clip: ClipSpec) -> float:
        """The share of real tokens (of sequences, for a sequence loss) whose ratio lies outside
        the clip range."""
        rho = self.ratio(log_ratio(logp_new, logp_old, mask), mask, clip)
        low, high = self.bounds(clip, mask.shape[1], logp_new)
        outside = (rho < low) | (rho > high)
        return float((outside if self.per_sequence else outside[mask]).float().mean())


class TokenRatioLoss(PolicyLoss):
    """GRPO: r_t = pi_theta(o_t | .) / pi_old(o_t | .), clipped to [1 - eps_low, 1 + eps_high]."""

    def ratio(self, log_r, mask, clip):
        return log_r.exp()


class CumulativeRatioLoss(PolicyLoss):
    """CTPO: rho_t^cum = prod_{t' <= t} r_t', clipped to the sqrt(t)-adaptive bounds
    e^(-eps_low t^p), e^(eps_high t^p) (theory.importance.adaptive_clip_bounds). log rho is
    capped at ``clip.log_ratio_cap`` before exp (theory.importance.CTPO_LOG_RATIO_CAP: it
    changes nothing where the clip binds, and keeps long responses' gradients finite)."""

    def ratio(self, log_r, mask, clip):
        return log_r.cumsum(1).clamp(max=clip.log_ratio_cap).exp()

    def bounds(self, clip, width, like):
        low, high = adaptive_clip_bounds(np.arange(1, width + 1), clip.low, clip.high, clip.power)
        return like.new_tensor(low)[None, :], like.new_tensor(high)[None, :]


class ReleasedCumulativeRatioLoss(CumulativeRatioLoss):
    """CTPO as its released code computes it (theory.importance.ctpo_released_objective, which cites
    the release's lines): CTPO's clip on a cumulative ratio whose token log ratios are clamped to
    +-``token_log_ratio_clamp`` and whose log is capped at ``log_ratio_cap``, the gradient flowing
    through the current token only, and for A < 0 the dual clip max(term, A e^(dual_clip t^p)).
    The release hard-codes the clamp (20) and the cap (10); its dual_clip (la_clip_c, 0.05 in
    ctpo.sh) is a setting of the release that this trainer fixes at that value. The clip bounds
    are ``clip_low``, ``clip_high`` and ``ctpo_power`` as for ``ctpo``: their defaults 0.025, 0.05
    and 0.5 are ctpo.sh's (lines 59-60, 63; the release's own default power, actor.yaml:84, is 0).
    Not reproduced: the rollout-correction weights ctpo.sh switches on (lines 47-48, 105-106),
    which multiply each token's loss (core_algos.py:1626-1627) to correct the sampler's log-probs
    against the trainer's; this trainer's old log-probs are the trainer's own (recompute_old_logprobs)."""

    def __init__(
        self,
        default_clip,
        summary,
        dual_clip: float = RELEASED_DUAL_CLIP,
        token_log_ratio_clamp: float = RELEASED_TOKEN_LOG_RATIO_CLAMP,
        log_ratio_cap: float = RELEASED_LOG_RATIO_CAP,
    ):
        super().__init__(default_clip, summary)
        self.dual_clip, self.token_log_ratio_clamp, self.log_ratio_cap = dual_clip, token_log_ratio_clamp, log_ratio_cap

    def ratio(self, log_r, mask, clip):
        c = self.token_log_ratio_clamp
        held = log_r.detach().clamp(-c, c).cumsum(1)  # the value: log rho_t^cum of the clamped token log ratios
        current = log_r - log_r.detach()  # zero, carrying the gradient of log pi(a_t | s_t) alone
        return (held + current).clamp(max=self.log_ratio_cap).exp()

    def surrogate(self, rho, adv, low, high, clip):
        terms = _surrogate(rho, adv, low, high)
        threshold = rho.new_tensor(dual_clip_threshold(np.arange(1, rho.shape[1] + 1), self.dual_clip, clip.power))
        return torch.where(adv < 0, torch.maximum(terms, adv * threshold), terms)


class SequenceRatioLoss(PolicyLoss):
    """GSPO: the length-normalised sequence ratio exp(mean_t log r_t), one term per sequence."""

    per_sequence = True

    def ratio(self, log_r, mask, clip):
        return (log_r.sum(1) / mask.sum(1)).exp()


# name -> loss; the default clip ranges are trainer.option_names.LOSS_CLIPS (theory.importance's)
LOSSES = {
    "grpo": TokenRatioLoss(LOSS_CLIPS["grpo"], "token ratio"),
    "gspo": SequenceRatioLoss(LOSS_CLIPS["gspo"], "length-normalised sequence ratio"),
    "ctpo": CumulativeRatioLoss(LOSS_CLIPS["ctpo"], "cumulative ratio, sqrt(t)-adaptive clip"),
    "ctpo_released": ReleasedCumulativeRatioLoss(
        LOSS_CLIPS["ctpo_released"], "cumulative ratio as CTPO's released code: current-token gradient, caps, dual clip"
    ),
}


def policy_loss(name: str, logp_new, logp_old, mask, advantages, weights, clip: ClipSpec, sequences: int):
    """:meth:`PolicyLoss.loss` of the loss ``name``."""
    return choose(LOSSES, name, "loss").loss(logp_new, logp_old, mask, advantages, weights, clip, sequences)


def clip_fractions(logp_new, logp_old, mask, clips: dict) -> dict:
    """Each loss's :meth:`PolicyLoss.clip_fraction` on the same tokens; ``clips`` maps loss
    name -> ClipSpec."""
    return {
        name: choose(LOSSES, name, "loss").clip_fraction(logp_new, logp_old, mask, clip) for name, clip in clips.items()
    }


def sequence_log_ratio(logp_new, logp_ref, mask):
    """l_i = sum_t log pi_theta(o_t) - log pi_ref(o_t) over the real tokens of each rollout."""
    return log_ratio(logp_new, logp_ref, mask).sum(1)


# Schulman's estimators of KL(pi_theta || pi_ref) from each sequence's log ratio l (seq_l)
KL_ESTIMATORS = {
    "k1": lambda seq_l: seq_l,
    "k2": lambda seq_l: 0.5 * seq_l**2,
    "k3": lambda seq_l: torch.expm1(-seq_l) + seq_l,
}


def kl_penalty(seq_log_ratio, estimator: str, tau: float | None):
    """Per-sequence k1/k2/k3 of l^tau = clip(l, -tau, tau) (no clip when ``tau`` is None)."""
    if tau is not None and not checks.real("tau", tau) >= 0:
        raise ValueError(f"tau must be >= 0 or None (no clip); got {tau}")
    seq_l = seq_log_ratio if tau is None else seq_log_ratio.clamp(-tau, tau)
    return choose(KL_ESTIMATORS, estimator, "kl_estimator")(seq_l)
