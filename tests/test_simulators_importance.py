"""The token MDPs behind the CTPO checks, and the C1-C9 rows."""

import numpy as np
import pytest

from simulators import importance
from simulators.registry import RunConfig, check_rng
from simulators.token_enumeration import Enumerated
from simulators.token_mdp import MarkovPolicyPair, TabularTokenMDP, prefix_states, state_lengths

QUICK = RunConfig(full=False, progress=False)


def test_prefix_states_index_every_prefix_once():
    vocab, horizon = 3, 4
    seqs = np.indices((vocab,) * horizon).reshape(horizon, -1).T
    states = prefix_states(seqs, vocab)
    for t in range(horizon):
        # sequences share the state of position t exactly when they share a_1..a_{t-1}
        prefixes = {tuple(s[:t]) for s in seqs}
        assert len(np.unique(states[:, t])) == len(prefixes)
    assert states.max() + 1 == len(state_lengths(vocab, horizon))


def test_enumeration_is_a_distribution_and_score_sum_is_the_gradient():
    rng = np.random.default_rng(0)
    mdp = TabularTokenMDP.random(rng, vocab=3, horizon=4)
    e = Enumerated(mdp)
    assert e.p_b.sum() == pytest.approx(1.0) and e.p_t.sum() == pytest.approx(1.0)
    grad = e.true_gradient()

    def value(logits):
        return Enumerated(mdp.with_theta(logits)).p_t @ e.reward

    u = rng.standard_normal(grad.shape)
    h = 1e-6
    fd = (value(mdp.logits_theta + h * u) - value(mdp.logits_theta - h * u)) / (2 * h)
    assert np.sum(grad * u) == pytest.approx(fd, rel=1e-6)


def test_score_norm2_is_the_squared_norm_of_each_sequences_gradient():
    """Enumerated.score_norm2 (the C9 variances) against score_sum one sequence at a time."""
    rng = np.random.default_rng(4)
    e = Enumerated(TabularTokenMDP.random(rng, vocab=3, horizon=4, delta=0.5))
    weights = rng.standard_normal(e.lp_t.shape)
    brute = [
        np.sum(e.mdp.score_sum(weights[n : n + 1], e.seqs[n : n + 1], e.states[n : n + 1], e.mdp.logits_theta) ** 2)
        for n in range(len(weights))
    ]
    np.testing.assert_allclose(e.score_norm2(weights), brute, rtol=1e-12)


def test_independent_kind_makes_token_ratios_independent():
    e = Enumerated(TabularTokenMDP.random(np.random.default_rng(1), vocab=3, horizon=4, kind="independent"))
    r = np.exp(e.log_r)
    # E_b[r_1 r_3] = E_b[r_1] E_b[r_3] (= 1) under independence
    assert e.p_b @ (r[:, 0] * r[:, 2]) == pytest.approx(1.0, rel=1e-12)
    assert e.p_b @ r[:, 2] == pytest.approx(1.0, rel=1e-12)


def test_markov_pair_moments_match_samples():
    rng = np.random.default_rng(2)
    pair = MarkovPolicyPair.random(rng, vocab=5, delta=0.3, stationary=True)
    log_r = pair.sample_log_ratios(rng, 20_000, 3)
    mean, var = pair.stationary_log_ratio_moments()
    assert abs(log_r.mean() - mean) < 4 * np.sqrt(var / log_r.size)
    assert np.exp(log_r[:, 0]).var() == pytest.approx(pair.chi2_per_step(), rel=0.1)  # Var(r) = chi2


def test_bad_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        TabularTokenMDP.random(np.random.default_rng(0), kind="markov")


@pytest.mark.parametrize("check", importance.CHECKS, ids=lambda c: c.name)
def test_importance_rows(check):
    rows = check.run(QUICK, check_rng(11, check.name))
    assert any(r.kind == "claim" for r in rows)
    for row in rows:
        assert row.ok, f"{row.claim} {row.kind}: {row.what}"
