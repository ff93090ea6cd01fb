"""The next-token sampler (trainer.rollout.draw_tokens) draws from exp(logp): frequencies against
the probabilities by z-test with the SE from the same draws, with controls; zero-probability
tokens are never drawn; the draws consume the generator row by row."""

import math

import numpy as np
import pytest
import torch

from trainer.rollout import draw_tokens

DRAWS = 200_000
# zero-probability tokens at both ends and inside, a rare token (expected count 20), a large one
PROBS = torch.tensor([0.0, 0.3, 1e-4, 0.0, 0.2, 0.0999, 0.4, 0.0])


def _logp(probs: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.log(probs).expand(rows, -1).contiguous()


def _z(tokens: torch.Tensor, probs: torch.Tensor) -> np.ndarray:
    """z of each positive-probability token's frequency against ``probs`` (SE from the draws)."""
    freq = np.bincount(tokens.numpy(), minlength=len(probs)) / len(tokens)
    p = probs.double().numpy()
    keep = p > 0
    se = np.sqrt(freq[keep] * (1 - freq[keep]) / len(tokens))
    return (freq[keep] - p[keep]) / np.where(se > 0, se, math.inf)


def test_frequencies_match_the_probabilities_and_zero_probability_is_never_drawn():
    tokens = draw_tokens(_logp(PROBS, DRAWS), torch.Generator().manual_seed(0))
    z = _z(tokens, PROBS)
    assert np.all(np.abs(z) < 4), z
    assert not torch.isin(tokens, torch.nonzero(PROBS == 0).squeeze(-1)).any()


def test_the_same_check_rejects_draws_from_a_tilted_distribution():
    """Control: draws of a 5 % tilt towards token 1 fail the check against the untilted probs."""
    tilted = PROBS.clone()
    tilted[1], tilted[6] = 0.315, 0.385
    tokens = draw_tokens(_logp(tilted, DRAWS), torch.Generator().manual_seed(0))
    assert np.max(np.abs(_z(tokens, PROBS))) > 4


def test_the_same_check_rejects_an_off_by_one_inversion():
    """Control: the token after the one the inversion finds (a wrong searchsorted side or bound)."""
    tokens = draw_tokens(_logp(PROBS, DRAWS), torch.Generator().manual_seed(0))
    assert np.max(np.abs(_z((tokens + 1).clamp(max=len(PROBS) - 1), PROBS))) > 4


def test_a_certain_token_is_always_drawn_even_at_the_top_of_the_unit_interval(monkeypatch):
    """One token of probability 1 between zeros; at every uniform (the largest below 1 included,
    forced through a generator stand-in) the draw is that token."""
    probs = torch.tensor([0.0, 0.0, 1.0, 0.0])
    assert torch.equal(draw_tokens(_logp(probs, 1000), torch.Generator().manual_seed(1)), torch.full((1000,), 2))
    below_one = torch.tensor([[1.0 - 2.0**-53]], dtype=torch.float64)
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: below_one)
    assert int(draw_tokens(_logp(probs, 1), torch.Generator())) == 2
    assert int(draw_tokens(_logp(PROBS, 1), torch.Generator())) == 6  # the last positive token


def test_rows_consume_the_generator_in_order():
    """Row r's draw depends on the generator's r-th uniform only: the first k rows of a draw are
    the draw of those k rows, whatever the other rows' distributions."""
    logp = torch.log_softmax(torch.randn(64, 50, generator=torch.Generator().manual_seed(2)), -1)
    full = draw_tokens(logp, torch.Generator().manual_seed(3))
    other = logp.clone()
    other[32:] = torch.log_softmax(torch.randn(32, 50), -1)
    assert torch.equal(draw_tokens(logp[:32], torch.Generator().manual_seed(3)), full[:32])
    assert torch.equal(draw_tokens(other, torch.Generator().manual_seed(3))[:32], full[:32])


@pytest.mark.parametrize("vocab", [2, 49_152])
def test_every_row_gets_one_in_range_token(vocab):
    logp = torch.log_softmax(torch.randn(16, vocab, generator=torch.Generator().manual_seed(4)), -1)
    tokens = draw_tokens(logp, torch.Generator().manual_seed(5))
    assert tokens.shape == (16,) and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < vocab
