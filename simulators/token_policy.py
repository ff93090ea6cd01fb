"""A small autoregressive softmax policy over token sequences, with exact gradients.

The policy is pi(o_t | t, o_{t-1}) = softmax(logits[t, o_{t-1}]) over a vocabulary
whose last token is EOS; the previous-token index ``vocab`` stands for BOS. A
sequence ends at its first EOS (which counts as a token) or at the horizon.

Each (position, previous token) pair owns its own logit row, so the score
function of token t touches only row (t, o_{t-1}) and the blocks of different
positions are disjoint. Hence the token-averaged log-likelihood gradient of VIP
§4, H(o) = (1/|o|) sum_t grad log pi(o_t | ...), has the exact norm

    ||H(o)||^2 = |o|^-2 * sum_t ||e_{o_t} - pi_t||^2,  ||e_a - pi||^2 = 1 - 2 pi_a + ||pi||^2.

This is the "real gradient" world of the V4 check: R and Z are functions of the
same sampled sequence, so Assumption 4.1(ii) is not imposed but measured.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAD = -1


@dataclasses.dataclass(frozen=True)
class MarkovTokenPolicy:
    """Logits of shape (horizon, vocab + 1, vocab); token ``vocab - 1`` is EOS."""

    logits: np.ndarray

    def __post_init__(self):
        if self.logits.ndim != 3 or self.logits.shape[1] != self.logits.shape[2] + 1:
            raise ValueError(f"logits must have shape (horizon, vocab + 1, vocab); got {self.logits.shape}")
        if self.vocab < 2:
            raise ValueError(f"vocab must be >= 2 (one content token and EOS); got {self.vocab}")

    @classmethod
    def random(
        cls, rng: np.random.Generator, vocab: int = 4, horizon: int = 8, scale: float = 1.0, eos_bias: float = -1.0
    ):
        """Gaussian logits with standard deviation ``scale``; ``eos_bias`` shifts the EOS logit."""
        logits = scale * rng.standard_normal((horizon, vocab + 1, vocab))
        logits[:, :, vocab - 1] += eos_bias
        return cls(logits)

    @property
    def horizon(self) -> int:
        return self.logits.shape[0]

    @property
    def vocab(self) -> int:
        return self.logits.shape[2]

    @property
    def eos(self) -> int:
        return self.vocab - 1

    def probs(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=-1, keepdims=True)
        expo = np.exp(shifted)
        return expo / expo.sum(axis=-1, keepdims=True)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` sequences as an int array (size, horizon), PAD after the end."""
        probs = self.probs()
        cdf = np.cumsum(probs, axis=-1)
        tokens = np.full((size, self.horizon), PAD, dtype=np.int64)
        prev = np.full(size, self.vocab, dtype=np.int64)  # BOS
        alive = np.ones(size, dtype=bool)
        for t in range(self.horizon):  # loop over positions, vectorised over sequences
            u = rng.random(size)
            drawn = np.minimum((u[:, None] > cdf[t, prev]).sum(axis=1), self.vocab - 1)
            tokens[:, t] = np.where(alive, drawn, PAD)
            prev = np.where(alive, drawn, prev)
            alive &= drawn != self.eos
        return tokens

    def lengths(self, tokens: np.ndarray) -> np.ndarray:
        return (tokens != PAD).sum(axis=-1)

    def _step_terms(self, tokens: np.ndarray):
        """Per-position probability rows pi_t and the mask of real tokens."""
        mask = tokens != PAD
        prev = np.concatenate([np.full(tokens.shape[:-1] + (1,), self.vocab), tokens[..., :-1]], axis=-1)
        prev = np.where(prev == PAD, self.vocab, prev)
        rows = self.probs()[np.arange(self.horizon), prev]  # (..., horizon, vocab)
        return rows, mask

    def log_prob(self, tokens: np.ndarray) -> np.ndarray:
        """log pi(o) of each sequence."""
        rows, mask = self._step_terms(tokens)
        chosen = np.take_along_axis(rows, np.where(mask, tokens, 0)[..., None], axis=-1)[..., 0]
        return np.where(mask, np.log(chosen), 0.0).sum(axis=-1)

    def grad_norm(self, tokens: np.ndarray) -> np.ndarray:
        """Z = ||H(o)||_2, the norm of the token-averaged score (VIP §4), exactly."""
        rows, mask = self._step_terms(tokens)
        chosen = np.take_along_axis(rows, np.where(mask, tokens, 0)[..., None], axis=-1)[..., 0]
        squared = 1.0 - 2.0 * chosen + np.sum(rows**2, axis=-1)
        total = np.where(mask, squared, 0.0).sum(axis=-1)
        return np.sqrt(total) / self.lengths(tokens)

    def enumerate(self):
        """Every distinct sequence and its probability (vocab**horizon must be small)."""
        grids = np.indices((self.vocab,) * self.horizon).reshape(self.horizon, -1).T
        ended = np.cumsum(grids == self.eos, axis=1)
        after_eos = np.concatenate([np.zeros((len(grids), 1), dtype=bool), ended[:, :-1] > 0], axis=1)
        sequences = np.unique(np.where(after_eos, PAD, grids), axis=0)
        return sequences, np.exp(self.log_prob(sequences))


def verifier_reward(policy: MarkovTokenPolicy, tokens: np.ndarray, rule: str) -> np.ndarray:
    """A rule-based verifier on sequences, reward +1 (correct) or -1.

    - ``"sum_mod3"``: the content tokens (all but EOS) sum to 0 modulo 3;
    - ``"short"``: the sequence has at most 3 tokens — a reward tied to the
      length, hence to Z (which averages over the length): Assumption 4.1(ii)
      should fail visibly.
    """
    content = np.where((tokens != PAD) & (tokens != policy.eos), tokens, 0)
    if rule == "sum_mod3":
        correct = content.sum(axis=-1) % 3 == 0
    elif rule == "short":
        correct = policy.lengths(tokens) <= 3
    else:
        raise ValueError(f"rule must be one of sum_mod3, short; got {rule!r}")
    return np.where(correct, 1.0, -1.0)
