"""VIP's released allocation run literally (``solver="slsqp"``, claim V13), pinned to the
released function's own outputs.

The ``RELEASED`` outputs come from running ``allocate_rollout`` of HieuNT91/VIP
``src/vip/allocation/bernoulli_allocation.py`` (commit 0c17c79) on these inputs under
numpy 2.4.6 and scipy 1.17.1, with 1 and with 2 BLAS threads (the same output). SLSQP's
iterates, its BLAS and numpy's unstable argsort decide the output: another scipy, numpy or
BLAS may change it (the failure message says so), and larger instances than these change
with the number of BLAS threads.
"""

from typing import NamedTuple

import numpy as np
import pytest
import scipy

from theory import allocation_slsqp
from theory.allocation import (
    ALLOCATION_RULES,
    released_relaxed_allocation,
    released_terms,
    released_vip_allocation,
)

PINNED_UNDER = {"numpy": "2.4.6", "scipy": "1.17.1"}


class Case(NamedTuple):
    why: str
    estimator: str
    budget: int
    lower: int
    upper: int
    p_hat: list
    released: list
    differs_from_exact: bool


RELEASED = [
    Case(
        "continuous",
        "rloo",
        96,
        4,
        32,
        [0.179, 0.64, 0.467, 0.371, 0.355, 0.791, 0.905, 0.177, 0.653, 0.298, 0.967, 0.92],
        [8, 10, 10, 10, 10, 7, 5, 8, 10, 9, 4, 5],
        differs_from_exact=False,
    ),
    Case(
        "continuous",
        "dr_grpo",
        96,
        4,
        32,
        [0.636, 0.753, 0.515, 0.826, 0.448, 0.339, 0.278, 0.226, 0.526, 0.431, 0.663, 0.013],
        [9, 7, 10, 6, 9, 9, 8, 7, 9, 9, 9, 4],
        differs_from_exact=True,
    ),
    Case(
        "ties, exact 0 and 1",
        "rloo",
        192,
        4,
        32,
        [
            0.5,
            0.375,
            0.25,
            0.625,
            0.375,
            0.25,
            0.125,
            0.875,
            0.75,
            0.625,
            0.0,
            0.875,
            0.5,
            0.375,
            0.875,
            0.125,
            0.5,
            0.75,
            0.0,
            0.75,
            0.25,
            0.375,
            0.5,
            0.125,
        ],
        [7, 7, 5, 7, 7, 6, 4, 4, 5, 7, 32, 4, 7, 7, 4, 4, 7, 6, 32, 6, 6, 7, 7, 4],
        differs_from_exact=True,
    ),
    Case(
        "ties, exact 0 and 1",
        "dr_grpo",
        192,
        4,
        32,
        [
            0.75,
            0.875,
            1.0,
            0.625,
            0.25,
            1.0,
            0.0,
            0.25,
            0.375,
            0.875,
            0.5,
            0.25,
            0.0,
            0.75,
            0.625,
            0.625,
            0.5,
            1.0,
            1.0,
            0.0,
            1.0,
            0.75,
            0.75,
            0.625,
        ],
        [4, 4, 4, 6, 4, 4, 31, 4, 6, 4, 6, 4, 31, 4, 6, 6, 6, 4, 4, 31, 4, 4, 5, 6],
        differs_from_exact=True,
    ),
    Case(
        "std < 1e-6, not all equal",
        "rloo",
        75,
        4,
        32,
        [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3000004],
        [8, 8, 8, 8, 8, 7, 7, 7, 7, 7],
        differs_from_exact=True,
    ),
    Case(
        "lower = 3: prompts under 4 zeroed",
        "rloo",
        64,
        3,
        32,
        [
            0.946,
            0.9537,
            0.351,
            0.1409,
            1.0,
            1.0,
            0.9914,
            0.8256,
            0.2412,
            0.0072,
            0.5296,
            0.8285,
            0.5437,
            0.8703,
            0.0037,
            0.8527,
        ],
        [0, 0, 9, 5, 0, 0, 0, 6, 7, 0, 12, 6, 9, 5, 0, 5],
        differs_from_exact=True,
    ),
    Case(
        "C = 16B: SLSQP stops short",
        "rloo",
        256,
        4,
        32,
        [
            0.024,
            0.0804,
            0.0551,
            0.1512,
            0.0003,
            0.0001,
            0.0972,
            0.0002,
            0.2949,
            0.9999,
            0.1702,
            0.5989,
            0.0,
            0.0801,
            0.0322,
            0.9954,
        ],
        [14, 11, 12, 11, 32, 32, 11, 32, 12, 4, 11, 13, 32, 11, 14, 4],
        differs_from_exact=True,
    ),
]


@pytest.mark.parametrize("case", RELEASED, ids=[f"{c.why} ({c.estimator})" for c in RELEASED])
def test_literal_mode_reproduces_the_released_function(case):
    got = released_vip_allocation(
        case.p_hat, case.budget, case.lower, case.upper, case.estimator, solver="slsqp"
    ).tolist()
    versions = {"numpy": np.__version__, "scipy": scipy.__version__}
    assert got == case.released, f"pinned under {PINNED_UNDER}, running under {versions}"


@pytest.mark.parametrize("case", [c for c in RELEASED if c.differs_from_exact], ids=lambda c: c.why)
def test_the_idealised_rule_misses_those_outputs(case):
    """Negative control: the exact solver gives another allocation on these instances, so the
    pins tell the two modes apart."""
    ideal = released_vip_allocation(case.p_hat, case.budget, case.lower, case.upper, case.estimator)
    assert ideal.tolist() != case.released


def test_greedy_gains_carry_the_loops_float_noise():
    """Each gain is the difference of two pairwise sums of the full vector, bit for bit: equal
    prompts get gains that differ in the last bits, exactly as a one-sum-per-prompt loop."""
    rng = np.random.default_rng(3)
    a = np.repeat(rng.uniform(0.05, 0.25, size=40), 5)  # ties, as from equal p_hat
    n = rng.integers(4, 12, size=a.size)
    terms = lambda m: a * (m + 3) / (m + 4) ** 2  # noqa: E731
    loop = np.array([terms(n.astype(float)).sum() - terms(n + np.eye(a.size)[q]).sum() for q in range(a.size)])
    gains = allocation_slsqp._greedy_gains(a, n)
    assert np.array_equal(gains, loop)
    assert np.unique(gains).size > np.unique(a).size  # the noise is there to break ties


def test_equal_probabilities_below_four_each_draw_prompts():
    rng = np.random.default_rng(0)
    n = released_vip_allocation(np.full(10, 0.5), 32, 3, 32, solver="slsqp", rng=rng)
    assert n.sum() == 32 and np.all(n % 4 == 0) and np.count_nonzero(n) <= 8
    with pytest.raises(ValueError, match="rng: with all p_hat equal"):
        released_vip_allocation(np.full(10, 0.5), 32, 3, 32, solver="slsqp")
    with pytest.raises(allocation_slsqp.ReleasedRuleError, match="multiple of 4"):
        released_vip_allocation(np.full(10, 0.5), 30, 3, 32, solver="slsqp", rng=rng)


def test_equal_probabilities_with_four_each_split_uniformly():
    n = released_vip_allocation(np.full(5, 0.5), 23, 4, 32, solver="slsqp")
    assert n.tolist() == [5, 5, 5, 4, 4]


def test_relaxed_step_is_scipys_slsqp_and_can_stop_short():
    """The C = 16B pin: SLSQP reports its state, and its point is not the exact minimiser."""
    case = next(c for c in RELEASED if c.why.startswith("C = 16B"))
    a, c = released_terms(case.p_hat, case.estimator)
    result = allocation_slsqp.slsqp_relaxed(a, -c, case.budget, case.lower, case.upper, case.estimator)
    assert result.nit >= 1 and abs(result.x.sum() - case.budget) < 1e-6
    exact = released_relaxed_allocation(case.p_hat, case.budget, case.lower, case.upper, case.estimator)
    assert np.abs(result.x - exact).sum() > 1.0


def test_rule_rounds_p_hat_to_five_decimals_as_the_released_trainer():
    rule = ALLOCATION_RULES["vip_released_slsqp"]
    p = np.array([0.1234501, 0.5, 0.7, 0.2, 0.9, 0.35])
    rounded = rule.allocate(p, 48, 4, 32, "rloo")
    assert rounded.tolist() == released_vip_allocation(np.round(p, 5), 48, 4, 32, solver="slsqp").tolist()


def test_rounding_stops_where_the_released_code_raises():
    """A relaxed point that floors above the budget, or freed units with every prompt at U: the
    released code raises on both, and so does the literal mode (a ValueError saying so)."""
    a = np.array([0.2, 0.1])
    with pytest.raises(allocation_slsqp.ReleasedRuleError, match="more than the budget 19"):
        allocation_slsqp.released_rounding(np.array([10.2, 10.9]), a, 19, 32)
    with pytest.raises(allocation_slsqp.ReleasedRuleError, match="every prompt is at upper = 4"):
        allocation_slsqp.released_rounding(np.array([4.0, 4.0]), a, 9, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"solver": "newton"}, "solver must be one of exact, slsqp"),
        ({"solver": "slsqp", "rounding": "exact"}, "rounding: solver='slsqp' runs the released rounding only"),
    ],
)
def test_literal_mode_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        released_vip_allocation([0.2, 0.6], 16, **kwargs)
