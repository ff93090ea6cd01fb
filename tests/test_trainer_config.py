"""trainer.config: YAML + --set, types, and every bad input refused before anything loads."""

import pytest

from tests.conftest import ROOT
from trainer.config import TrainConfig, apply_overrides, load_config, save_config
from trainer.run import main

CONFIGS = sorted((ROOT / "trainer" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_configs_load(path):
    config = load_config(path)
    assert config.rollout_budget >= config.prompts_per_step * config.min_rollouts


def test_paper_defaults():
    c = TrainConfig()
    assert (c.learning_rate, c.warmup_steps, c.prompts_per_step, c.rollout_budget, c.temperature) == (1e-6, 20, 512, 4096, 1.0)
    assert c.kl_coef == 0.0
    assert TrainConfig(loss="ctpo").clip_range == (0.025, 0.05)


def test_set_coerces_to_the_field_type():
    values = apply_overrides({}, ["loss=ctpo", "learning_rate=1e-5", "steps=3", "budget=none", "log_z_norm=true", "max_prompts=1e2"])
    assert values == {"loss": "ctpo", "learning_rate": 1e-5, "steps": 3, "budget": None, "log_z_norm": True, "max_prompts": 100}


def test_saved_config_round_trips(tmp_path):
    config = TrainConfig(loss="gspo", budget=4096, kl_coef=0.1, kl_clip="tau_star")
    assert load_config(save_config(config, tmp_path / "c.yaml")) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss=ppo"], "loss must be one of grpo, gspo, ctpo"),
        (["advantage=gae"], "advantage must be one of"),
        (["allocation=random"], "allocation must be one of"),
        (["budget=100"], r"budget C = 100 is infeasible for 512 prompts with L = 4, U = 32"),
        (["budget=20000"], "infeasible"),
        (["allocation=vip", "min_rollouts=2"], r"min_rollouts \(L\) must be >= 3 with allocation=vip"),
        (["min_rollouts=1"], r"min_rollouts \(L\) must be >= 2"),
        (["max_rollouts=3"], r"max_rollouts \(U\) must be >= min_rollouts"),
        (["temperature=0"], "temperature must be > 0"),
        (["kl_delta=1"], r"kl_delta must lie in \(0, 1\)"),
        (["steps=two"], "--set steps: expected int"),
        (["lossy=1"], "--set lossy: unknown config field"),
        (["reward=nonsense"], "reward must be one of"),
    ],
)
def test_bad_config_is_refused_with_the_argument_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_unknown_yaml_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss: grpo\nlearning_rat: 1e-5\n")
    with pytest.raises(ValueError, match="unknown config field.*learning_rat"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss=nope"], "loss must be one of"),
        (["dataset=/nonexistent/data.jsonl"], "does not exist"),
        (["prompts_per_step=100", "max_prompts=64", "budget=800"], "exceeds the dataset's 64 prompts"),
        (["model=/nonexistent/model-dir"], "has no loadable tokenizer"),
        (["reward=math:sqrt"], "reward function"),
    ],
)
def test_cli_refuses_before_training(tmp_path, capsys, overrides, message):
    args = ["--config", str(ROOT / "trainer" / "configs" / "tiny_cpu.yaml"), "--set", f"output_dir={tmp_path}"]
    assert main(args + [a for o in overrides for a in ("--set", o)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "metrics.jsonl").exists()


def test_empty_dataset_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = ["--config", str(ROOT / "trainer" / "configs" / "tiny_cpu.yaml"), "--set", f"output_dir={tmp_path}", "--set", f"dataset={empty}"]
    assert main(args) == 2
    assert "holds no examples" in capsys.readouterr().err
