"""VIP's released allocation run literally (``solver="slsqp"``, claim V13), against the
released function's own outputs where those are a property of the code, and against the
properties they stand for where the processor decides them.

The ``RECORDED`` outputs come from running ``allocate_rollout`` of HieuNT91/VIP
``src/vip/allocation/bernoulli_allocation.py`` (commit 0c17c79) on these inputs under numpy
2.4.6 and scipy 1.17.1. An output is pinned (``PINNED``) only where it survives p_hat perturbed
at 1e-12, 1 and 2 BLAS threads and every order of exact ties (``test_pins_are_robust``, the
guard of ``tests/pinning.py``) and ``python scripts/pin_kernels.py``, which reruns the pins under
OpenBLAS's kernels from Prescott to Cooper Lake and numpy's SIMD levels; the others say what
moves them (``fragile``). Pins are compared up to permutations among prompts of equal rounding
weight a = p(1 - p): the released code hands exact ties to prompts in the order of numpy's
default sort, which differs with the CPU's SIMD level.

``STOPS_SHORT`` (C = 16B) is where SLSQP stops short of its minimiser: the point where it stops
moves with the BLAS kernel (the released output was [14, 11, 12, 11, 32, 32, 11, 32, 12, 4, 11,
13, 32, 11, 14, 4] on the machine that recorded it; OpenBLAS's SkylakeX kernels give 31 for the
fifth prompt), so the tests assert what that instance shows on any machine.
"""

from typing import NamedTuple

import numpy as np
import pytest

from tests.pinning import TIE_ORDERS, perturbed, robust_outputs, up_to_ties
from theory import allocation_slsqp
from theory.allocation_released import (
    released_objective,
    released_relaxed_allocation,
    released_terms,
    released_vip_allocation,
)
from theory.allocation_rules import ALLOCATION_RULES


class Case(NamedTuple):
    why: str
    estimator: str
    budget: int
    lower: int
    upper: int
    p_hat: list
    released: list
    differs_from_exact: bool
    fragile: str = ""  # why the output is not pinned: what moves it

    def literal(self, p_hat=None):
        p = self.p_hat if p_hat is None else p_hat
        return released_vip_allocation(p, self.budget, self.lower, self.upper, self.estimator, solver="slsqp")

    def idealised(self):
        return released_vip_allocation(self.p_hat, self.budget, self.lower, self.upper, self.estimator)

    def up_to_ties(self, counts):
        return up_to_ties(counts, released_terms(self.p_hat, self.estimator)[0])


RECORDED = [
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
        differs_from_exact=False,  # the idealised rule gives it too, up to the order of ties
        fragile="OpenBLAS's Prescott kernel, 1 thread: 1e-12 perturbations move a p_hat = 0 prompt from 32 to 31",
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
        differs_from_exact=False,  # the idealised rule gives it too, up to the order of ties
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
]


class Instance(NamedTuple):
    estimator: str
    budget: int
    lower: int
    upper: int
    p_hat: list

    @property
    def sizes(self):
        """(budget, lower, upper), the positional arguments after p_hat."""
        return self.budget, self.lower, self.upper


STOPS_SHORT = Instance(
    "rloo",
    256,
    4,
    32,
    [0.024, 0.0804, 0.0551, 0.1512, 0.0003, 0.0001, 0.0972, 0.0002, 0.2949, 0.9999, 0.1702, 0.5989, 0.0, 0.0801]
    + [0.0322, 0.9954],
)
PINNED = [c for c in RECORDED if not c.fragile]
TIES = [c for c in RECORDED if c.why.startswith("ties")]


@pytest.mark.pinned
@pytest.mark.parametrize("case", PINNED, ids=[f"{c.why} ({c.estimator})" for c in PINNED])
def test_literal_mode_reproduces_the_released_function(case):
    assert case.up_to_ties(case.literal()) == case.up_to_ties(case.released)


@pytest.mark.pinned
@pytest.mark.parametrize("case", PINNED, ids=[f"{c.why} ({c.estimator})" for c in PINNED])
def test_pins_are_robust(case, monkeypatch):
    """The guard: a pin stays only while no perturbation a processor could make moves it."""
    outputs = robust_outputs(
        case.literal,
        case.p_hat,
        np.random.default_rng(0),
        monkeypatch=monkeypatch,
        sort_target=(allocation_slsqp, "_descending"),
    )
    moved = {
        label: out.tolist() for label, out in outputs.items() if case.up_to_ties(out) != case.up_to_ties(case.released)
    }
    assert not moved, f"pinned output {case.released} moves: {moved}"


@pytest.mark.pinned
def test_the_guard_rejects_the_pin_that_failed_on_another_processor():
    """Negative control of the guard: the output that an AMD EPYC's kernels changed also changes
    under 1e-12 perturbations, so ``test_pins_are_robust`` would have refused it."""
    outputs = robust_outputs(
        lambda p: released_vip_allocation(p, *STOPS_SHORT.sizes, STOPS_SHORT.estimator, solver="slsqp"),
        STOPS_SHORT.p_hat,
        np.random.default_rng(0),
    )
    assert len({tuple(out.tolist()) for out in outputs.values()}) > 1


@pytest.mark.pinned
@pytest.mark.parametrize("case", TIES, ids=[c.estimator for c in TIES])
def test_exact_pins_of_tied_outputs_would_depend_on_the_sort(case, monkeypatch):
    """Negative control of the comparison up to ties: the tied outputs themselves change with the
    order of equal values, so an exact pin of them would be the processor's, not the code's."""
    exact = set()
    for order in TIE_ORDERS.values():
        if order is not None:
            monkeypatch.setattr(allocation_slsqp, "_descending", order)
            exact.add(tuple(case.literal().tolist()))
    assert len(exact) > 1


@pytest.mark.parametrize("case", [c for c in PINNED if c.differs_from_exact], ids=lambda c: c.why)
def test_the_idealised_rule_misses_those_outputs(case):
    """Negative control: the exact solver gives another allocation on these instances, so the
    pins tell the two modes apart."""
    assert case.up_to_ties(case.idealised()) != case.up_to_ties(case.released)


def stopping_short(instance: Instance, p_hat, allocation, relaxed) -> list[str]:
    """What the C = 16B instance shows on any machine, for an ``allocation`` and the ``relaxed``
    point it was rounded from; returns the properties that fail."""
    estimator, (budget, lower, upper) = instance.estimator, instance.sizes
    ideal = released_vip_allocation(p_hat, *instance.sizes, estimator)
    optimum = released_vip_allocation(p_hat, *instance.sizes, estimator, rounding="exact")
    exact = released_relaxed_allocation(p_hat, *instance.sizes, estimator)
    weights = released_terms(p_hat, estimator)[0]
    failed = []
    if allocation.sum() != budget or allocation.min() < lower or allocation.max() > upper:
        failed.append("feasible")
    if up_to_ties(allocation, weights) == up_to_ties(ideal, weights):
        failed.append("differs from the idealised rule")
    if np.abs(relaxed - exact).sum() <= 1.0:
        failed.append("relaxed point more than 1 rollout (L1) from the minimiser")
    if released_objective(p_hat, relaxed, estimator) < released_objective(p_hat, exact, estimator):
        failed.append("exact relaxed objective <= the relaxed point's")
    if released_objective(p_hat, allocation, estimator) < released_objective(p_hat, optimum, estimator):
        failed.append("integer optimum <= the allocation's objective")
    return failed


@pytest.mark.pinned
def test_slsqp_stopping_short_shows_on_every_perturbation():
    """SLSQP stops short on this instance wherever it runs: its point is more than a rollout from
    the minimiser, and the literal output is feasible and differs from the idealised rule, for
    the inputs and each 1e-12 perturbation of them (which move the point where it stops)."""
    for p in [np.asarray(STOPS_SHORT.p_hat), *perturbed(STOPS_SHORT.p_hat, np.random.default_rng(1))]:
        a, c = released_terms(p, STOPS_SHORT.estimator)
        solved = allocation_slsqp.slsqp_relaxed(a, -c, *STOPS_SHORT.sizes, STOPS_SHORT.estimator)
        literal = allocation_slsqp.released_rounding(solved.x, a, STOPS_SHORT.budget, STOPS_SHORT.upper)
        assert solved.nit >= 1 and abs(solved.x.sum() - STOPS_SHORT.budget) < 1e-6
        assert stopping_short(STOPS_SHORT, p, literal, solved.x) == []


def test_the_idealised_rule_fails_the_stopping_short_properties():
    """Negative control: the idealised rule rounds the exact minimiser, so it fails both
    properties that tell the literal mode apart."""
    p = np.asarray(STOPS_SHORT.p_hat)
    exact = released_relaxed_allocation(p, *STOPS_SHORT.sizes, STOPS_SHORT.estimator)
    ideal = released_vip_allocation(p, *STOPS_SHORT.sizes, STOPS_SHORT.estimator)
    assert stopping_short(STOPS_SHORT, p, ideal, exact) == [
        "differs from the idealised rule",
        "relaxed point more than 1 rollout (L1) from the minimiser",
    ]


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
