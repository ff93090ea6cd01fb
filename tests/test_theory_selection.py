"""theory.selection: DAPO's dynamic-sampling mask and GRESO's skipper (skip probability against
1 - max(p^z, 0.01) by Monte Carlo with a negative control, adaptation, state, refusals)."""

import numpy as np
import pytest

from theory.selection import (
    KEEP_FLOOR,
    P_MAX,
    P_MIN,
    P_START,
    TARGET_EASY,
    TARGET_HARD,
    GresoSkipper,
    informative,
)


def test_informative_keeps_mixed_groups_and_single_rewards_and_drops_all_equal_ones():
    groups = [np.array([0.0, 1.0, 1.0]), np.ones(4), np.zeros(2), np.array([0.3]), np.array([-1.0, 1.0])]
    assert informative(groups).tolist() == [True, False, False, True, True]


def test_informative_drops_equal_floats_that_np_std_calls_spread():
    """verl's test is np.std > 0, which is 1.4e-17 for three 0.1s; the mask uses max > min."""
    equal = np.full(3, 0.1)
    assert np.std(equal) > 0
    assert not informative([equal])[0]


@pytest.mark.parametrize(
    "groups, message",
    [
        ([np.array([1.0, 0.0]), np.array([])], r"groups\[1\] must be a 1-D array of at least one reward"),
        ([np.array([np.nan, 1.0])], r"groups\[0\] must be finite"),
        ([np.ones((2, 2))], r"groups\[0\] must be a 1-D array"),
    ],
)
def test_informative_refuses_empty_or_non_finite_groups(groups, message):
    with pytest.raises(ValueError, match=message):
        informative(groups)


def _skipper_with_histories(p_easy, p_hard):
    """Prompts with known trailing runs: (history of group means, kind, z)."""
    histories = {
        0: ([], None, 0),  # never rolled out: kept
        1: ([1.0], "easy", 1),
        2: ([0.5, 1.0, 1.0, 1.0], "easy", 3),
        3: ([1.0, 0.0, 0.0], "hard", 2),
        4: ([1.0, 1.0, 0.25], None, 0),  # the last group was mixed: kept
        5: ([0.0] * 8, "hard", 8),  # p_hard^8 < 0.01: the floor binds
        6: ([1.0] * 12, "easy", 12),  # p_easy^12 < 0.01: the floor binds
    }
    skipper = GresoSkipper(len(histories), p_easy, p_hard)
    for q, (means, _, _) in histories.items():
        for mean in means:
            skipper.observe([q], [mean])
    return skipper, histories


def _z_scores(formula, p_easy=0.7, p_hard=0.4, draws=20_000, seed=0):
    """z of the empirical skip frequency of each prompt against ``formula(p, z)`` (SE from the
    same draws); an exact comparison where the frequency is 0 or 1."""
    skipper, histories = _skipper_with_histories(p_easy, p_hard)
    prompts = np.repeat(np.arange(len(histories)), draws)
    freq = skipper.skip(prompts, np.random.default_rng(seed)).reshape(len(histories), draws).mean(axis=1)
    z = []
    for q, (_, kind, run) in histories.items():
        expected = 0.0 if kind is None else formula(p_easy if kind == "easy" else p_hard, run)
        se = np.sqrt(freq[q] * (1 - freq[q]) / draws)
        if se > 0:
            z.append((freq[q] - expected) / se)
        else:  # never or always skipped in every draw: only an exact match passes
            z.append(0.0 if freq[q] == expected else np.inf)
    return np.array(z)


def test_skip_frequency_matches_one_minus_max_p_to_the_z_and_the_floor():
    """GRESO (PS 117, 142): skip with 1 - max(p^z, 0.01), z the trailing run of easy groups
    (p_easy) or of hard groups (p_hard); |z| < 4 for every history."""
    z = _z_scores(lambda p, run: 1 - max(p**run, KEEP_FLOOR))
    assert np.all(np.abs(z) < 4), z


@pytest.mark.parametrize(
    "wrong",
    [
        lambda p, run: 1 - p**run,  # no keep floor
        lambda p, run: 1 - max((1.1 - p) ** run, KEEP_FLOOR),  # p_easy and p_hard exchanged (0.7 <-> 0.4)
        lambda p, run: 1 - max(p ** (run + 1), KEEP_FLOOR),  # the run counted one too long
    ],
    ids=["no-floor", "p-swapped", "run-plus-one"],
)
def test_the_same_check_rejects_a_wrong_skip_formula(wrong):
    z = _z_scores(wrong)
    assert np.max(np.abs(z)) > 4, z


def test_unseen_and_mixed_prompts_are_never_skipped():
    skipper, _ = _skipper_with_histories(P_MIN, P_MIN)
    assert not skipper.skip(np.repeat([0, 4], 5000), np.random.default_rng(1)).any()
    assert skipper.seen([0, 4]).tolist() == [False, True]


def test_adaptation_moves_each_p_by_a_hundredth_toward_its_target_within_bounds():
    skipper = GresoSkipper(3)
    assert (skipper.p_easy, skipper.p_hard) == (P_START, P_START)
    skipper.adapt(TARGET_EASY, TARGET_HARD - 0.01)  # easy reached its target (>=): skip more; hard did not
    assert skipper.p_easy == pytest.approx(P_START - 0.01) and skipper.p_hard == pytest.approx(P_START + 0.01)
    for _ in range(100):
        skipper.adapt(1.0, 0.0)
    assert (skipper.p_easy, skipper.p_hard) == (P_MIN, P_MAX)
    for _ in range(100):
        skipper.adapt(0.0, 1.0)
    assert (skipper.p_easy, skipper.p_hard) == (P_MAX, P_MIN)


def test_state_round_trip_restores_the_skip_draws():
    skipper, histories = _skipper_with_histories(0.6, 0.3)
    skipper.adapt(0.5, 0.0)
    restored = GresoSkipper(len(histories))
    restored.load_state_dict(skipper.state_dict())
    prompts = np.repeat(np.arange(len(histories)), 50)
    first = skipper.skip(prompts, np.random.default_rng(3))
    assert np.array_equal(restored.skip(prompts, np.random.default_rng(3)), first)
    assert (restored.p_easy, restored.p_hard) == (skipper.p_easy, skipper.p_hard)
    with pytest.raises(ValueError, match=r"the skipper's state holds \[7\] prompts; this run has 5"):
        GresoSkipper(5).load_state_dict(skipper.state_dict())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: GresoSkipper(0), r"n_prompts must be an integer >= 1; got 0"),
        (lambda s: GresoSkipper(3, p_easy=0.99), r"p_easy must lie in \[0.05, 0.95\]; got 0.99"),
        (lambda s: s.observe([3], [1.0]), r"indices must lie in \[0, 2\]; got values in \[3, 3\]"),
        (lambda s: s.observe([0], [1.5]), r"group_means must lie in \[0, 1\]"),
        (lambda s: s.observe([0, 1], [1.0]), r"group_means must hold one mean per index \(2\)"),
        (lambda s: s.skip([0.5], np.random.default_rng(0)), r"indices must be a 1-D array of prompt indices"),
        (lambda s: s.adapt(-0.1, 0.2), r"easy_fraction must lie in \[0, 1\]"),
    ],
)
def test_bad_arguments_are_refused_naming_them(call, message):
    skipper = GresoSkipper(3)
    before = skipper.state_dict()
    with pytest.raises(ValueError, match=message):
        call(skipper)
    after = skipper.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # a refused call changes nothing
