"""trainer.config: YAML + --set, types, and every bad input refused before anything loads."""

import pytest

from tests.conftest import ROOT, TINY
from trainer.config import TINY_OFFLINE, TrainConfig, apply_overrides, load_config, save_config, tiny_config
from trainer.run import main

CONFIGS = sorted((ROOT / "trainer" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_configs_load(path):
    config = load_config(path)
    assert config.rollout_budget >= config.prompts_per_step * config.min_rollouts


def test_paper_defaults():
    c = TrainConfig()
    assert (c.learning_rate, c.warmup_steps, c.prompts_per_step, c.rollout_budget, c.temperature) == (
        1e-6,
        20,
        512,
        4096,
        1.0,
    )
    assert c.kl_coef == 0.0
    assert TrainConfig(loss="ctpo").clip_range == (0.025, 0.05)
    released = TrainConfig(loss="ctpo_released")  # ctpo.sh:59-63: la_clip_low, la_clip_high, la_power
    assert (*released.clip_range, released.ctpo_power, released.aggregation) == (0.025, 0.05, 0.5, "token_mean")


def test_set_coerces_to_the_field_type():
    values = apply_overrides(
        {}, ["loss=ctpo", "learning_rate=1e-5", "steps=3", "budget=none", "log_z_norm=true", "max_prompts=1e2"]
    )
    assert values == {
        "loss": "ctpo",
        "learning_rate": 1e-5,
        "steps": 3,
        "budget": None,
        "log_z_norm": True,
        "max_prompts": 100,
    }


def test_saved_config_round_trips(tmp_path):
    config = TrainConfig(loss="gspo", budget=4096, kl_coef=0.1, kl_clip="tau_star")
    assert load_config(save_config(config, tmp_path / "c.yaml")) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss=ppo"], "loss must be one of grpo, gspo, ctpo, ctpo_released; got 'ppo'"),
        (["advantage=gae"], "advantage must be one of"),
        (["allocation=random"], "allocation must be one of"),
        (["budget=100"], r"budget C = 100 is infeasible for 512 prompts with L = 4, U = 32"),
        (["budget=20000"], "infeasible"),
        (["allocation=vip", "min_rollouts=2"], r"min_rollouts \(L\) must be >= 3 with allocation=vip"),
        (["min_rollouts=1"], r"min_rollouts \(L\) must be >= 2"),
        (["max_rollouts=3"], r"max_rollouts \(U\) must be >= min_rollouts"),
        (["temperature=0"], r"temperature must lie in \[1e-05, 100000\]"),
        (["kl_delta=1"], r"kl_delta must lie in \(0, 1\)"),
        (["steps=two"], "--set steps must be an integer; got 'two'"),
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
        (["model=/nonexistent/model-dir"], "no such local folder"),
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
    args = [
        "--config",
        str(ROOT / "trainer" / "configs" / "tiny_cpu.yaml"),
        "--set",
        f"output_dir={tmp_path}",
        "--set",
        f"dataset={empty}",
    ]
    assert main(args) == 2
    assert "holds no examples" in capsys.readouterr().err


# --- one coercion path by declared type: YAML values, --set strings and Python arguments ---------


def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_1_1_exponent_without_a_dot_is_a_float(tmp_path):
    """PyYAML reads 1e-3 as a string (YAML 1.1); the float field takes it as the number."""
    import yaml

    assert yaml.safe_load("learning_rate: 1e-3")["learning_rate"] == "1e-3"
    config = load_config(_yaml(tmp_path, "learning_rate: 1e-3\nkl_coef: 2e-2\n"))
    assert (config.learning_rate, config.kl_coef) == (1e-3, 0.02)


@pytest.mark.parametrize(
    "text, value",
    [("steps: 3.0", 3), ("steps: '3'", 3), ("steps: 3e0", 3), ("max_prompts: null", None), ("budget: ~", None)],
)
def test_yaml_integral_values_and_nulls_are_accepted(tmp_path, text, value):
    field = text.split(":")[0]
    assert getattr(load_config(_yaml(tmp_path, text)), field) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps: 2.7", "steps must be an integer; got 2.7"),
        ("steps: 2.5e0", "steps must be an integer; got '2.5e0'"),
        ("steps: true", "steps must be an integer; got True"),
        ("steps: null", "steps must be an integer; got null"),
        ("kl_coef: .nan", "kl_coef must be a finite number; got nan"),
        ("learning_rate: .inf", "learning_rate must be a finite number; got inf"),
        ("log_z_norm: 2", "log_z_norm must be true or false; got 2"),
        ("output_dir: ''", "output_dir must be a non-empty string; got ''"),
        ("model: 123", "model must be a non-empty string; got 123 .int: quote it in YAML"),
        ("dataset: null", "dataset must be a non-empty string; got null"),
    ],
)
def test_yaml_values_of_the_wrong_type_are_refused_naming_file_and_field(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps=2.5e0", "--set steps must be an integer; got '2.5e0'"),
        ("steps=2.7", "--set steps must be an integer; got '2.7'"),
        ("kl_coef=nan", "--set kl_coef must be a finite number; got 'nan'"),
        ("clip_high=inf", "--set clip_high must be a finite number; got 'inf'"),
        ("output_dir=", "--set output_dir must be a non-empty string; got ''"),
        ("output_dir=  ", "--set output_dir must be a non-empty string"),
        ("log_z_norm=2", "--set log_z_norm must be true or false; got '2'"),
        ("seed=-1", r"seed must be an integer in \[0, 2\*\*62\]; got -1"),
        ("reward_timeout_s=0", "reward_timeout_s must be > 0; got 0.0"),
        ("max_prompts=0", "max_prompts must be an integer >= 1; got 0"),
        ("vllm_max_model_len=-5", "vllm_max_model_len must be an integer >= 1; got -5"),
    ],
)
def test_set_values_of_the_wrong_type_or_range_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_set_integral_exponent_is_an_integer():
    assert load_config(None, ["steps=3e0"]).steps == 3
    assert load_config(None, ["steps=12345678901234567891"]).steps == 12345678901234567891  # exact, not via float


def test_python_arguments_take_the_same_path():
    assert TrainConfig(learning_rate="1e-3", steps=4.0, log_z_norm="yes").learning_rate == 1e-3
    with pytest.raises(ValueError, match="steps must be an integer; got 2.7"):
        TrainConfig(steps=2.7)
    with pytest.raises(ValueError, match="kl_coef must be a finite number; got nan"):
        TrainConfig(kl_coef=float("nan"))


def test_empty_output_dir_writes_nothing_into_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = str(ROOT / "trainer" / "configs" / "tiny_cpu.yaml")
    assert main(["--config", tiny, "--set", "output_dir=", "--set", "steps=1"]) == 2
    assert "output_dir must be a non-empty string" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_tiny_yaml_and_the_tiny_config_are_the_same_offline_run():
    """trainer/configs/tiny_cpu.yaml and trainer.config.tiny_config share TINY_OFFLINE's fields
    (control: a field the YAML does not pin, prompts_per_step, takes tiny_config's argument)."""
    yaml_config, built = load_config(TINY), tiny_config(prompts_per_step=3, budget=12)
    for name, value in TINY_OFFLINE.items():
        assert getattr(yaml_config, name) == getattr(built, name) == value, name
    assert built.prompts_per_step == 3 != yaml_config.prompts_per_step
    assert not built.tensorboard and not built.progress


# --- the option tables ------------------------------------------------------------------------

_IMPORTS_TORCH = "import sys; {code}; print('torch' in sys.modules)"


def _imports_torch(code: str) -> bool:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS_TORCH.format(code=code)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "True"


def test_loading_and_checking_a_config_imports_no_torch():
    load = "from trainer.config import load_config; load_config('trainer/configs/tiny_cpu.yaml', []).validate()"
    assert not _imports_torch(load)
    assert _imports_torch("import trainer.losses")  # control: the check sees an import of torch


def test_the_torch_tables_hold_the_names_the_config_checks():
    from trainer import losses, option_names, precision

    assert tuple(losses.LOSSES) == tuple(option_names.LOSS_CLIPS)
    assert {name: loss.default_clip for name, loss in losses.LOSSES.items()} == option_names.LOSS_CLIPS
    assert tuple(losses.AGGREGATIONS) == option_names.AGGREGATIONS
    assert tuple(losses.KL_ESTIMATORS) == option_names.KL_ESTIMATORS
    assert tuple(precision.CPU_BF16) == option_names.CPU_BF16


def test_allocation_method_offers_the_methods_that_give_whole_counts():
    import numpy as np

    from theory.allocation import METHODS, allocate

    assert [name for name in METHODS if METHODS[name].integer] == ["exact", "paper"]
    for name in ("exact", "paper"):
        assert TrainConfig(allocation="vip", allocation_method=name).allocation_method == name
    with pytest.raises(ValueError, match="allocation_method must be one of exact, paper; got 'relaxed'"):
        TrainConfig(allocation="vip", allocation_method="relaxed").validate()
    a = np.random.default_rng(0).uniform(0.1, 1.0, 12)
    counts = {name: allocate(a, 96, 3, 16, "rloo", name) for name in METHODS}
    for name in ("exact", "paper"):
        assert counts[name].sum() == 96 and np.array_equal(counts[name], np.round(counts[name]))
    assert not np.array_equal(counts["relaxed"], np.round(counts["relaxed"]))  # why the trainer does not offer it


def test_every_embedding_is_a_table_entry_and_auto_falls_back_to_the_hashed_features(monkeypatch):
    import prompt_features

    texts = ["1 + 2 =", "what is 3 + 4?"]
    hashed, kind = prompt_features.prompt_features(texts, "hashed")
    assert kind == "hashed"

    def missing(texts):
        raise ImportError("no sentence-transformers")

    monkeypatch.setattr(prompt_features, "embed_prompts", missing)
    features, kind = prompt_features.prompt_features(texts, "auto")
    assert kind == "hashed" and (features == hashed).all()
    with pytest.raises(ImportError):
        prompt_features.prompt_features(texts, "sentence_transformers")
    with pytest.raises(ValueError, match="embedding must be one of auto, sentence_transformers, hashed"):
        prompt_features.prompt_features(texts, "bag")
