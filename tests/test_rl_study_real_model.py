"""rl_study.real_model's summary (paired gains, intervals) and its figure, on made-up runs; the
study itself trains SmolLM2 for about an hour (``python -m rl_study.real_model``)."""

import numpy as np
import pytest
from scipy import stats

from figures.real_model import real_model
from rl_study.real_model import summary_rows, t_interval


def _runs(rng, arms=("uniform", "vip", "ctpo"), seeds=2, problems=40):
    base = {
        s: {"train": rng.random(problems).tolist(), "held_out": rng.random(problems).tolist()} for s in range(seeds)
    }
    curve = {"reward": [0.3, 0.4, 0.5], "entropy": [1.2, 1.1, 1.0], "seconds": [10.0, 10.0, 10.0]}
    finals = {}
    for k, arm in enumerate(arms):
        for s in range(seeds):
            shift = 0.1 * (k + 1)
            train = (np.asarray(base[s]["train"]) + shift + 0.05 * rng.standard_normal(problems)).tolist()
            finals[arm, s] = ({"train": train, "held_out": base[s]["held_out"]}, curve)
    return base, finals


def test_t_interval_is_scipys():
    values = np.array([0.1, 0.3, -0.05, 0.2, 0.15])
    mean, half, p = t_interval(values)
    low, high = stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean()) and half == pytest.approx((high - low) / 2)
    assert p == pytest.approx(stats.ttest_1samp(values, 0).pvalue)
    assert np.isnan(t_interval([0.2, 0.2])[1])  # no spread: no interval, not a zero-width one


def test_summary_rows_pair_by_seed_and_problem(tmp_path):
    base, finals = _runs(np.random.default_rng(0))
    rows = summary_rows(base, finals, {"uniform": 2, "vip": 2, "ctpo": 1})
    per_run = [r for r in rows if "seed" in r.details]
    assert len(per_run) == 5
    for r in per_run:
        expected = np.mean(
            np.subtract(finals[r.details["arm"], r.details["seed"]][0]["train"], base[r.details["seed"]]["train"])
        )
        assert r.details["train_gain"] == pytest.approx(expected)
        assert r.details["held_out_gain"] == pytest.approx(0.0)  # the made-up finals keep the held-out rates
    vip = next(r for r in rows if r.what.startswith("vip - uniform"))
    assert vip.details["per_seed"] == pytest.approx([0.1, 0.1], abs=0.03)  # shifts 0.2 - 0.1
    assert vip.details["identical_runs"] == [True, True]  # the made-up runs share one curve
    ctpo = next(r for r in rows if r.what.startswith("ctpo - uniform"))
    assert len(ctpo.details["per_seed"]) == 1  # the seeds both arms have
    assert np.isnan(next(r for r in rows if r.what.startswith("ctpo: mean gain")).details["ci95"])
    assert real_model({"results": [r.to_json() for r in rows]}) is not None
