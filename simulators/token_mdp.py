"""Token MDPs for the CTPO checks (claims C1-C8): a tabular one small enough to enumerate,
and a Markov one for long horizons.

:class:`TabularTokenMDP` — vocabulary V, fixed horizon H, deterministic transitions
s_{t+1} = s_t . a_t, and two softmax policies (behaviour pi_b, target pi_theta) with one
logit row per prefix state (sum_{l < H} V^l states). Every one of the V^H sequences is
enumerated at once (arrays of shape (V^H, H)); no Python loop runs over sequences.
``kind="independent"`` ties the logits of all states of one length together, so the
per-token ratios are independent across positions (the assumption of Prop 2(ii));
``kind="stationary"`` also makes them identically distributed (§3.3's t sigma^2).

:class:`MarkovPolicyPair` — both policies depend on the previous token only; sampling
is vectorised over sequences, looping over the H positions, so H can be thousands.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import log_softmax, softmax

from theory.importance import chi2_divergence


@dataclasses.dataclass(frozen=True)
class TabularTokenMDP:
    vocab: int
    horizon: int
    logits_b: np.ndarray  # (n_states, vocab)
    logits_theta: np.ndarray

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        vocab: int = 3,
        horizon: int = 6,
        scale: float = 1.0,
        delta: float = 0.3,
        kind: str = "tabular",
        future_equal_after: int | None = None,
    ):
        """Behaviour logits ~ N(0, scale^2); target = behaviour + delta N(0, 1).

        ``kind="independent"``: one logit row per position (prefix-independent policies);
        ``kind="stationary"``: one logit row for every position (i.i.d. token ratios).
        ``future_equal_after=k``: the two policies coincide on every state of length >= k.
        """
        n_states = (vocab**horizon - 1) // (vocab - 1)
        lengths = state_lengths(vocab, horizon)
        if kind in ("independent", "stationary"):
            rows = horizon if kind == "independent" else 1
            rows_b = np.broadcast_to(scale * rng.standard_normal((rows, vocab)), (horizon, vocab))
            rows_d = np.broadcast_to(delta * rng.standard_normal((rows, vocab)), (horizon, vocab))
            logits_b, diff = rows_b[lengths], rows_d[lengths]
        elif kind == "tabular":
            logits_b = scale * rng.standard_normal((n_states, vocab))
            diff = delta * rng.standard_normal((n_states, vocab))
        else:
            raise ValueError(f"kind must be one of tabular, independent, stationary; got {kind!r}")
        if future_equal_after is not None:
            diff = np.where((lengths >= future_equal_after)[:, None], 0.0, diff)
        return cls(vocab, horizon, logits_b, logits_b + diff)

    def with_theta(self, logits_theta: np.ndarray) -> "TabularTokenMDP":
        return dataclasses.replace(self, logits_theta=logits_theta)

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """All V^H sequences (N, H) and the state index of each position (N, H)."""
        seqs = np.indices((self.vocab,) * self.horizon).reshape(self.horizon, -1).T
        return seqs, prefix_states(seqs, self.vocab)

    def token_logp(self, logits: np.ndarray, seqs: np.ndarray, states: np.ndarray) -> np.ndarray:
        """log pi(a_t | s_t) for every sequence and position (N, H)."""
        return log_softmax(logits, axis=-1)[states, seqs]

    def score_sum(self, weights: np.ndarray, seqs: np.ndarray, states: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """sum_{seq, t} weights[seq, t] grad_logits log pi(a_t | s_t), shape (n_states, V):
        the score of a softmax row is onehot(a_t) - pi(. | s_t)."""
        grad = np.zeros_like(logits)
        np.add.at(grad, (states.ravel(), seqs.ravel()), weights.ravel())
        per_state = np.bincount(states.ravel(), weights=weights.ravel(), minlength=logits.shape[0])
        return grad - per_state[:, None] * softmax(logits, axis=-1)


def state_lengths(vocab: int, horizon: int) -> np.ndarray:
    """Length of the prefix of every state index (states ordered by length, then base V)."""
    counts = vocab ** np.arange(horizon)
    return np.repeat(np.arange(horizon), counts)


def prefix_states(seqs: np.ndarray, vocab: int) -> np.ndarray:
    """State index of s_t = (a_1..a_{t-1}) for each position: offset(t-1) + base-V code."""
    n, h = seqs.shape
    codes = np.zeros((n, h), dtype=np.int64)
    for t in range(1, h):  # loop over positions only
        codes[:, t] = codes[:, t - 1] * vocab + seqs[:, t - 1]
    offsets = (vocab ** np.arange(h) - 1) // (vocab - 1)
    return codes + offsets[None, :]


def prefix_mean(values: np.ndarray, probs: np.ndarray, states: np.ndarray, t: int) -> np.ndarray:
    """E[values | a_1:t] under the sequence law ``probs``, for every sequence (N,).

    The prefix a_1:t is the state of position t + 1 (or the whole sequence when t = H)."""
    if t == states.shape[1]:
        return values
    key = states[:, t]
    num = np.bincount(key, weights=probs * values)
    den = np.bincount(key, weights=probs)
    return num[key] / den[key]


@dataclasses.dataclass(frozen=True)
class MarkovPolicyPair:
    """pi(a_t | a_{t-1}) for both policies; row ``vocab`` is the start state."""

    logits_b: np.ndarray  # (vocab + 1, vocab)
    logits_theta: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, vocab: int = 8, delta: float = 0.05, stationary: bool = False):
        """``stationary=True``: every row equal, so the log ratios are i.i.d. across positions."""
        rows = 1 if stationary else vocab + 1
        logits_b = np.broadcast_to(rng.standard_normal((rows, vocab)), (vocab + 1, vocab)).copy()
        diff = np.broadcast_to(delta * rng.standard_normal((rows, vocab)), (vocab + 1, vocab))
        return cls(logits_b, logits_b + diff)

    @property
    def vocab(self) -> int:
        return self.logits_b.shape[1]

    def sample_log_ratios(self, rng: np.random.Generator, n: int, horizon: int) -> np.ndarray:
        """log r_t = log pi_theta(a_t | a_{t-1}) - log pi_b(a_t | a_{t-1}) of n sequences drawn from pi_b."""
        lp_b, lp_t = log_softmax(self.logits_b, axis=-1), log_softmax(self.logits_theta, axis=-1)
        cdf = np.cumsum(np.exp(lp_b), axis=1)
        prev = np.full(n, self.vocab)
        out = np.empty((n, horizon))
        for t in range(horizon):  # positions loop; sequences vectorised
            a = np.minimum((rng.random(n)[:, None] > cdf[prev]).sum(axis=1), self.vocab - 1)
            out[:, t] = lp_t[prev, a] - lp_b[prev, a]
            prev = a
        return out

    def stationary_log_ratio_moments(self) -> tuple[float, float]:
        """Mean and variance of log r_t when every row is equal (i.i.d. positions)."""
        lp_b, lp_t = log_softmax(self.logits_b[0]), log_softmax(self.logits_theta[0])
        p, x = np.exp(lp_b), lp_t - lp_b
        mean = float(p @ x)
        return mean, float(p @ (x - mean) ** 2)

    def chi2_per_step(self) -> float:
        """chi2(pi_theta || pi_b) of one step when every row is equal."""
        return float(chi2_divergence(softmax(self.logits_theta[0]), softmax(self.logits_b[0])))
