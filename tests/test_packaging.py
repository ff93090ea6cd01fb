"""Packaging: the console scripts of pyproject.toml, the packages it installs, and the script
forms of the trainer's CLIs run from any directory."""

import importlib
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT
from trainer import run

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]


def test_the_console_scripts_are_the_clis():
    assert SCRIPTS == {
        "rlvr-claims": "simulators.cli:main",
        "rlvr-figures": "figures.__main__:main",
        "rlvr-stats": "stats_tests.__main__:main",
        "rlvr-train": "trainer.run:cli",
        "rlvr-eval": "trainer.evaluate:main",
        "rlvr-study": "rl_study.cli:main",
        "rlvr-convert": "trainer.convert_gguf:main",
    }


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_resolves_to_a_callable(name):
    """importlib.metadata would read the installed copy's entry points; this checks the checkout's."""
    module, function = SCRIPTS[name].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_every_top_level_package_is_installed():
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    installed = sorted(PYPROJECT["tool"]["setuptools"]["packages"])
    assert installed == [p for p in packages if p not in ("tests", "benchmarks")]


def test_rlvr_train_exits_with_mains_status(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["rlvr-train", "--set", "no_such_field=1"])
    with pytest.raises(SystemExit) as info:
        run.cli()
    assert info.value.code == 2 and "no_such_field" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["trainer/run.py", "trainer/evaluate.py"])
def test_script_form_runs_from_another_directory(tmp_path, script):
    cmd = [sys.executable, str(ROOT / script), "--help"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--config" in proc.stdout, proc.stderr[-2000:]
