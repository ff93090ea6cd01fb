"""The softmax token policy: exact enumeration, sampling, and Z = ||H(o)|| against finite differences."""

import numpy as np
import pytest

from simulators.token_policy import PAD, MarkovTokenPolicy, verifier_reward


@pytest.fixture
def policy():
    return MarkovTokenPolicy.random(np.random.default_rng(3), vocab=3, horizon=5)


def test_enumeration_is_a_distribution(policy):
    sequences, probs = policy.enumerate()
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    # every sequence ends at its first EOS or at the horizon
    eos_counts = (sequences == policy.eos).sum(axis=1)
    assert np.all(eos_counts <= 1)
    lengths = policy.lengths(sequences)
    assert np.all((sequences[np.arange(len(sequences)), lengths - 1] == policy.eos) | (lengths == policy.horizon))


def test_sampling_matches_enumeration(policy):
    sequences, probs = policy.enumerate()
    draws = policy.sample(np.random.default_rng(4), 100_000)
    exact_mean = np.sum(probs * policy.lengths(sequences))
    exact_sd = np.sqrt(np.sum(probs * policy.lengths(sequences) ** 2) - exact_mean**2)
    z = (policy.lengths(draws).mean() - exact_mean) / (exact_sd / np.sqrt(len(draws)))
    assert abs(z) < 4


def test_grad_norm_equals_finite_difference_gradient(policy):
    sequences, _ = policy.enumerate()
    for seq in sequences[[0, 7, len(sequences) // 2, -1]]:
        grad = np.zeros_like(policy.logits)
        eps = 1e-6
        for index in np.ndindex(policy.logits.shape):
            up, down = policy.logits.copy(), policy.logits.copy()
            up[index] += eps
            down[index] -= eps
            grad[index] = (
                MarkovTokenPolicy(up).log_prob(seq[None])[0] - MarkovTokenPolicy(down).log_prob(seq[None])[0]
            ) / (2 * eps)
        length = (seq != PAD).sum()
        assert policy.grad_norm(seq[None])[0] == pytest.approx(np.linalg.norm(grad) / length, rel=1e-6)


def test_verifier_rewards_are_signed(policy):
    sequences, _ = policy.enumerate()
    for rule in ("sum_mod3", "short"):
        assert set(np.unique(verifier_reward(policy, sequences, rule))) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="rule must be one of"):
        verifier_reward(policy, sequences, "parity")


def test_bad_logits_shape():
    with pytest.raises(ValueError, match="logits must have shape"):
        MarkovTokenPolicy(np.zeros((4, 3, 3)))
