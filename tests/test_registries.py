"""One table per extension point: each is the only list of its names (config validation reads
it), adding an entry is one definition, and the ledger and the trainer allocate by the same rule."""

import dataclasses

import numpy as np
import pytest
from scipy import integrate, special, stats

from tests.conftest import tiny_config
from theory import allocation as alloc
from theory import allocation_rules as rules
from trainer import losses, option_names
from trainer.config import CHOICES, load_config
from trainer.data import arithmetic_task
from trainer.loop import Trainer
from trainer.models import tiny_model, tiny_tokenizer
from trainer.rewards import get_reward

SIZES = dict(
    prompts_per_step=4, budget=16, min_rollouts=3, max_rollouts=8, max_new_tokens=2, steps=2, micro_batch_size=8
)


@pytest.mark.parametrize("field", sorted(CHOICES))
def test_an_unknown_name_is_refused_at_config_time_listing_the_table(field):
    names = ", ".join(CHOICES[field])
    with pytest.raises(ValueError, match=f"{field} must be one of {names}; got 'nope'"):
        load_config(None, [f"{field}=nope"])


def _step_metrics(**overrides):
    tok = tiny_tokenizer()
    config = tiny_config(**(SIZES | overrides))
    trainer = Trainer(
        config,
        tiny_model("qwen2", len(tok)),
        tok,
        arithmetic_task(16, np.random.default_rng(0)),
        get_reward("first_number"),
    )
    return [trainer.train_step()[0] for _ in range(config.steps)]


def test_a_new_loss_is_one_table_entry_and_its_name(monkeypatch):
    """A loss registered in trainer.losses.LOSSES, with its name and default clip in
    trainer.option_names.LOSS_CLIPS (what the config checks without torch), is accepted by the
    config, trained with and logged (its clip fraction beside the others) without another change."""
    monkeypatch.setitem(losses.LOSSES, "grpo_wide", losses.TokenRatioLoss((0.4, 0.4), "token ratio, wide clip"))
    monkeypatch.setitem(option_names.LOSS_CLIPS, "grpo_wide", (0.4, 0.4))
    rows = _step_metrics(loss="grpo_wide")
    assert tiny_config(**(SIZES | {"loss": "grpo_wide"})).clip_range == (0.4, 0.4)
    assert all(np.isfinite(r["loss"]) and 0 <= r["clip/grpo_wide"] <= 1 for r in rows)


def test_a_new_allocation_rule_is_one_table_entry(monkeypatch):
    def everything_to_the_first(
        p_hat, budget, lower, upper, estimator, method="exact", rng=None, success_variance=None
    ):
        n = np.full(len(p_hat), lower)
        n[0] += budget - n.sum()
        return n

    rule = rules.AllocationRule(everything_to_the_first, True, 2, "first", "the rest to the first prompt")
    monkeypatch.setitem(rules.ALLOCATION_RULES, "first", rule)
    rows = _step_metrics(allocation="first")
    assert all(r["allocation/max"] == 16 - 3 * 3 and r["allocation/min"] == 3 for r in rows)


def test_vip_posterior_trains_on_the_gps_posterior(monkeypatch):
    """allocation=vip_posterior: the rule receives the GP's E[p (1 - p)] for the step's prompts; at
    the first step every prompt has the prior N(0, 1), so each value is E[sigmoid(g)(1 - sigmoid(g))]
    under N(0, 1) (scipy's quad here), and after an update they differ."""
    seen = []
    real = rules.ALLOCATION_RULES["vip_posterior"]

    def recording(*args, success_variance=None, **kwargs):
        seen.append(success_variance)
        return real.allocate(*args, success_variance=success_variance, **kwargs)

    monkeypatch.setitem(rules.ALLOCATION_RULES, "vip_posterior", dataclasses.replace(real, allocate=recording))
    rows = _step_metrics(allocation="vip_posterior", predictor="gp")
    prior, _ = integrate.quad(lambda g: special.expit(g) * special.expit(-g) * stats.norm.pdf(g), -40, 40)
    assert len(seen) == 2 and all(v.shape == (4,) for v in seen)
    np.testing.assert_allclose(seen[0], prior, rtol=1e-10)
    assert not np.allclose(seen[1], prior)
    assert all(sum(int(n) * c for n, c in r["allocation/histogram"].items()) == 16 for r in rows)


def test_vip_posterior_without_a_posterior_is_refused_at_config_time(tmp_path):
    """ridge keeps no posterior: the config names both options and the predictors that have one,
    before anything is built or written."""
    out = tmp_path / "run"
    with pytest.raises(
        ValueError,
        match=r"predictor=ridge has no posterior, and allocation=vip_posterior .*"
        r"predictor must be one of gp_binomial, gp, gp_released",
    ):
        load_config(None, ["allocation=vip_posterior", "predictor=ridge", f"output_dir={out}"])
    assert not out.exists()
    assert load_config(None, ["allocation=vip", "predictor=ridge"]).predictor == "ridge"  # VIP's rule needs none


def test_the_literal_released_rule_trains_and_draws_with_the_runs_generator():
    """vip_released_slsqp in the trainer: at the first step every p_hat is the GP's prior, so
    with C = 12 < 4 x 4 prompts the released rule gives 4 rollouts per draw to 3 draws; the
    draws come from the run's numpy Generator, so a second run with the same seed repeats them."""
    first, second = (_step_metrics(allocation="vip_released_slsqp", budget=12) for _ in range(2))
    start = first[0]["allocation/histogram"]
    assert set(start) <= {"0", "4", "8", "12"} and sum(int(n) * c for n, c in start.items()) == 12
    assert [r["allocation/histogram"] for r in first] == [r["allocation/histogram"] for r in second]


@pytest.mark.parametrize("rule", ["uniform", "inverse_accuracy", "inverse_variance"])
def test_every_rule_trains_at_its_smallest_lower_bound(rule):
    """The config accepts min_rollouts down to a rule's ``min_lower``; the rule must then run."""
    need = rules.ALLOCATION_RULES[rule].min_lower
    rows = _step_metrics(allocation=rule, min_rollouts=need, budget=4 * need)
    assert all(sum(int(n) * c for n, c in r["allocation/histogram"].items()) == 4 * need for r in rows)


@pytest.mark.parametrize(
    "fields",
    [
        {"allocation": "knapsack", "predictor": "reward_buffer", "min_rollouts": 2},
        {"allocation": "vip_posterior", "predictor": "gp_fitted"},
    ],
    ids=["knapsack-buffer", "posterior-fitted"],
)
def test_the_peer_rules_train_with_their_predictors(fields):
    rows = _step_metrics(**fields, steps=3)
    assert all(sum(int(n) * c for n, c in r["allocation/histogram"].items()) == 16 for r in rows)


ISSUE_P_HAT = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999, 0.3, 0.6, 0.7])


def test_the_trainer_and_the_ledger_allocate_inverse_variance_alike():
    """Both call theory.allocation_rules.ALLOCATION_RULES, which weighs the answer variance p (1 - p);
    negative control: the +-1 reward variance 4 p (1 - p) moves 4 of these
    12 prompts (the eps of App. C.1 is additive)."""
    from simulators.allocation import rule_allocations
    from trainer.allocation import RolloutAllocator

    ledger = rule_allocations(ISSUE_P_HAT, 96, "rloo")["inverse-variance"]  # the ledger's bounds: [3, 32]
    trainer = RolloutAllocator(
        "inverse_variance", [f"question {i}" for i in range(12)], 96, 3, 32, "rloo", embedding="hashed"
    )
    trainer.predictor.predict = lambda indices: ISSUE_P_HAT[indices]
    counts, _ = trainer.allocate(np.arange(12))
    np.testing.assert_array_equal(counts, ledger)
    other = alloc.inverse_variance_allocation(alloc.success_variance_weights(ISSUE_P_HAT), 96, 3, 32)
    assert int((other != ledger).sum()) == 4


def test_clip_fractions_can_be_switched_off_without_changing_training():
    on, off = _step_metrics(), _step_metrics(log_clip_fractions=False)
    assert all(any(k.startswith("clip/") for k in r) for r in on)
    assert not any(k.startswith("clip/") for r in off for k in r)
    for a, b in zip(on, off):
        assert (a["loss"], a["reward/mean"], a["grad_norm"]) == (b["loss"], b["reward/mean"], b["grad_norm"])


def test_clip_fractions_once_per_mini_batch_equal_the_micro_batches_token_weighted():
    """Computed once per mini-batch on the concatenated micro-batches' log-probs: the share of
    tokens is the token-weighted mean of the micro-batches' shares."""
    import torch

    g = torch.Generator().manual_seed(0)
    old = torch.randn(12, 7, generator=g) * 0.1
    new = old + torch.randn(12, 7, generator=g) * 0.3
    mask = torch.rand(12, 7, generator=g) < 0.8
    mask[:, 0] = True
    clips = {name: losses.ClipSpec(*loss.default_clip) for name, loss in losses.LOSSES.items() if not loss.per_sequence}
    whole = losses.clip_fractions(new, old, mask, clips)
    parts = [slice(0, 5), slice(5, 9), slice(9, 12)]
    for name in clips:
        weighted = sum(
            losses.clip_fractions(new[p], old[p], mask[p], clips)[name] * float(mask[p].sum()) for p in parts
        )
        assert whole[name] == pytest.approx(weighted / float(mask.sum()), rel=1e-6)


# --- claim checks and figures are found, not listed ----------------------------------------------


def test_every_module_with_checks_is_a_topic_and_no_other():
    import importlib
    import pkgutil

    import simulators
    from simulators.registry import TOPICS

    names = [m.name for m in pkgutil.iter_modules(simulators.__path__) if not m.name.startswith("_")]
    with_checks = [name for name in names if hasattr(importlib.import_module(f"simulators.{name}"), "CHECKS")]
    assert list(TOPICS) == sorted(with_checks) and "ledger" not in TOPICS


def test_a_new_topic_module_is_found_by_its_checks(tmp_path):
    from simulators.registry import _assigns

    (tmp_path / "new_topic.py").write_text("from simulators.registry import Check\n\nCHECKS: list = []\n")
    (tmp_path / "helpers.py").write_text("def CHECKS():\n    pass\n\nCHECKS_NOTE = 1\n")  # control: no assignment
    assert _assigns(tmp_path / "new_topic.py", "CHECKS")
    assert not _assigns(tmp_path / "helpers.py", "CHECKS")


def test_every_figure_module_is_drawn(tmp_path, monkeypatch):
    """A module of figures/ that defines FIGURES is drawn by ``python -m figures`` without being
    listed; one without (records, style) is not."""
    import sys
    import types

    import figures
    from figures.__main__ import figure_modules

    found = {m.__name__ for m in figure_modules()}
    assert {"figures.variance", "figures.rl_study"} <= found and not found & {"figures.records", "figures.style"}
    (tmp_path / "extra.py").write_text("FIGURES = []\n")
    monkeypatch.setattr(figures, "__path__", [*figures.__path__, str(tmp_path)])
    monkeypatch.setitem(sys.modules, "figures.extra", types.ModuleType("figures.extra"))
    sys.modules["figures.extra"].FIGURES = []
    assert "figures.extra" in {m.__name__ for m in figure_modules()}
