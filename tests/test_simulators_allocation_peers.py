"""Claim V14: the rule benchmark of simulators.allocation_peers and its figure."""

import numpy as np
import pytest

from figures import style  # noqa: F401  (the Agg backend: files only)
from figures.allocation_peers import rules_benchmark
from simulators import allocation_peers as peers
from simulators.ledger import claim
from simulators.predictor import DriftingWorld
from simulators.registry import RunConfig, check_rng

SMALL = (300, 16, 8)  # Q, B, steps


def test_passes_never_repeat_a_prompt_within_a_draw():
    passes = peers._Passes(np.random.default_rng(0), 50)
    draws = [passes.draw(16) for _ in range(20)]
    assert all(np.unique(d).size == 16 for d in draws)


@pytest.mark.parametrize("name", list(peers.ARMS))
def test_every_arm_runs_and_is_reproducible(name):
    arm = peers.ARMS[name]
    first, second = (peers.arm_run(11, arm, *SMALL) for _ in range(2))
    assert first == second
    if arm.selection == "none":
        assert first["generated"] == 1.0  # exactly the budget C
    else:
        assert first["generated"] >= 1.0 and first["trained_all_equal"] == 0.0
    assert first["wasted"] + first["useful"] == pytest.approx(1.0)


def test_dapo_step_keeps_b_informative_groups_in_draw_order():
    rng = np.random.default_rng(3)
    world = DriftingWorld.random(rng, 400, steps=5)
    step = peers._Step(peers.ARMS["DAPO"], world, None, None, rng)
    passes = peers._Passes(rng, 400)
    out = step.run(passes.draw, 32)
    assert out["idx"].size == 32 and all(np.ptp(r) > 0 for r in out["rewards"])
    drawn = np.concatenate([i for i, _ in out["seen"]])
    positions = [int(np.flatnonzero(drawn == q)[0]) for q in out["idx"]]
    assert positions == sorted(positions)  # the first B kept, in the order they were drawn
    assert sum(len(r) for _, rs in out["seen"] for r in rs) > peers.PER_PROMPT * 32


def test_the_paired_claim_needs_a_significant_paired_gain():
    def runs(gain):
        rng = np.random.default_rng(0)
        return [
            {
                "uniform": {"variance": 1.0},
                "a": {"variance": 1.0 - gain + 0.01 * rng.standard_normal()},
                "b": {"variance": 1.0},
            }
            for _ in range(8)
        ]

    assert peers._paired_claim(runs(0.1), "a", "b", claim, {}).holds
    assert not peers._paired_claim(runs(0.0), "a", "b", claim, {}).holds


def test_rows_and_figure_at_a_small_size(monkeypatch):
    monkeypatch.setattr(peers, "QUICK", (3, *SMALL))
    rows = peers.run_peers(RunConfig(full=False, progress=False), check_rng(0, "allocation_peers"))
    assert {r.kind for r in rows} == {"claim", "control", "report"}
    assert sum(r.kind == "report" for r in rows) == len(peers.ARMS) + 1
    by_what = {r.what.split(":")[0]: r for r in rows if r.kind == "report"}
    assert by_what["uniform"].estimate == 1.0
    dapo_like = [r for r in rows if r.what.startswith("DAPO and GRESO")]
    assert dapo_like[0].holds
    check = {"name": "allocation_peers", "results": [r.to_json() for r in rows]}
    figure = rules_benchmark(check)
    assert len(figure.axes) == 2 and len(figure.axes[1].patches) == len(peers.ARMS)
