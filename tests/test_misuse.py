"""Misuse of the commands that write, as a table: each case sets files up, runs a command in this
process, and checks its exit status, the words of its message and that every file that was
there before is unchanged (write_guard's rule, README "What the commands write"). The trainer's
run-folder cases are in tests/test_trainer_run_folder.py."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from figures.__main__ import main as figures_main
from rl_study.cli import main as study_main
from rl_study.real_model import main as real_model_main
from simulators.cli import main as simulators_main
from simulators.example_rollouts import main as example_main
from stats_tests.__main__ import main as stats_main
from tests.conftest import TINY, snapshot
from trainer.convert_gguf import main as convert_main
from trainer.evaluate import main as evaluate_main
from trainer.run import main as train_main
from write_guard import RUN_LOCK

EXAMPLE = Path(__file__).resolve().parents[1] / "stats_tests" / "data" / "example_rollouts.jsonl"


def _log(root: Path) -> None:
    shutil.copy(EXAMPLE, root / "log.jsonl")


def _results(root: Path) -> None:
    _log(root)
    (root / "results.json").write_text('{"mine": true}\n')


def _finished_run(root: Path) -> None:
    _log(root)
    run = root / "run"
    (run / "checkpoints" / "step-1").mkdir(parents=True)
    (run / "config.yaml").write_text("model: tiny:qwen2\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "checkpoints" / "step-1" / "state.pt").write_bytes(b"weights")


def _config_copy(root: Path) -> None:
    shutil.copy(TINY, root / "tiny.yaml")


def _not_a_folder(root: Path) -> None:
    _log(root)
    (root / "plain.txt").write_text("a file, not a folder\n")


def _bad_yaml(root: Path) -> None:
    (root / "bad.yaml").write_text("model: [tiny:qwen2\nsteps: 3\n")


def _train(argv):
    """The trainer on the tiny config into ``out/`` with ``argv`` added (no progress bar)."""
    return train_main(["--config", str(TINY), "--no-progress", "--set", "output_dir=out", *argv])


def _records_and_run(root: Path) -> None:
    _finished_run(root)
    (root / "records").mkdir()


def _status(main):
    """``main`` with argparse's exit (``parser.error``) turned into the status it carries."""

    def run(argv):
        try:
            return main(argv)
        except SystemExit as exc:
            return exc.code

    return run


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], None]
    command: Callable
    argv: list[str]  # paths relative to the case's folder
    status: int
    words: str
    live_run: bool = False  # hold run/run.lock as a live trainer would
    new_files: tuple[str, ...] = ()  # files the command may add (globs)
    moved: dict = field(default_factory=dict)  # glob of a moved-aside file -> its content

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("stats --json over its own log", _log, stats_main, ["log.jsonl", "--json", "log.jsonl"], 2, "also an input"),
    Case(
        "stats --json over the log through another path",
        _log,
        stats_main,
        ["log.jsonl", "--json", "./sub/../log.jsonl"],
        2,
        "also an input",
    ),
    Case("stats --json over a file", _results, stats_main, ["log.jsonl", "--json", "results.json"], 2, "exists; pass"),
    Case(
        "stats --json --overwrite moves the old file aside",
        _results,
        stats_main,
        ["log.jsonl", "--json", "results.json", "--overwrite"],
        0,
        "was moved to",
        new_files=("results.json", "results.json.replaced-*"),
        moved={"results.json.replaced-*": '{"mine": true}\n'},
    ),
    Case(
        "stats --json over a run's metrics",
        _finished_run,
        stats_main,
        ["log.jsonl", "--json", "run/metrics.jsonl", "--overwrite"],
        2,
        "would write into the run in",
    ),
    Case(
        "stats --json into a run's checkpoints",
        _finished_run,
        stats_main,
        ["log.jsonl", "--json", "run/checkpoints/x.json"],
        2,
        "would write into the run in",
    ),
    Case("stats --json to a folder", _finished_run, stats_main, ["log.jsonl", "--json", "run"], 2, "is a folder"),
    Case(
        "stats --json under a file",
        _not_a_folder,
        stats_main,
        ["log.jsonl", "--json", "plain.txt/out.json"],
        2,
        "cannot write into",
    ),
    Case(
        "eval --out over an existing file",
        _results,
        evaluate_main,
        ["--config", str(TINY), "--out", "results.json"],
        2,
        "exists; pass --overwrite",
    ),
    Case(
        "eval --out over its config",
        _config_copy,
        evaluate_main,
        ["--config", "tiny.yaml", "--out", "tiny.yaml", "--overwrite"],
        2,
        "also an input",
    ),
    Case(
        "convert --overwrite over a finished run",
        _finished_run,
        convert_main,
        ["tiny:qwen2", "run", "--overwrite"],
        2,
        "holds a training run (config.yaml, metrics.jsonl, checkpoints)",
    ),
    Case(
        "convert --overwrite over a live run's folder",
        lambda root: (root / "run").mkdir(),
        convert_main,
        ["tiny:qwen2", "run", "--overwrite"],
        2,
        "holds a training run (run.lock (held by process",
        live_run=True,
    ),
    Case("convert to a file", _results, convert_main, ["tiny:qwen2", "results.json"], 2, "is a file; give a folder"),
    Case(
        "train: a YAML syntax error", _bad_yaml, train_main, ["--config", "bad.yaml"], 2, "bad.yaml: line 2, column 6"
    ),
    Case("train: a folder as --config", _log, train_main, ["--config", "sub"], 2, "sub is a folder; give a YAML file"),
    Case("train: a folder as dataset", _log, _train, ["--set", "dataset=sub"], 2, "dataset sub: datasets cannot read"),
    Case("train: dtype=float17", _log, _train, ["--set", "dtype=float17"], 2, "dtype must be one of auto, float32"),
    Case("train: device=tpu9", _log, _train, ["--set", "device=tpu9"], 2, "device must be auto, cpu, cuda or cuda:N"),
    Case("train: temperature=1e-300", _log, _train, ["--set", "temperature=1e-300"], 2, "temperature must lie in"),
    Case("train: learning_rate=1e12", _log, _train, ["--set", "learning_rate=1e12"], 2, "learning_rate must lie in"),
    Case("train: a seed past 64 bits", _log, _train, ["--set", "seed=99999999999999999999"], 2, "seed must be an"),
    Case("train: a missing local model", _log, _train, ["--set", "model=./models/x"], 2, "no such local folder"),
    Case("train: a .txt dataset", _not_a_folder, _train, ["--set", "dataset=plain.txt"], 2, "a .txt file; use .jsonl"),
    Case("eval: --k a,b", _log, _status(evaluate_main), ["--config", str(TINY), "--k", "a,b"], 2, "argument --k: must"),
    Case("eval: --seed -5", _log, _status(evaluate_main), ["--config", str(TINY), "--seed", "-5"], 2, "--seed must be"),
    Case("eval: k above n", _log, _status(evaluate_main), ["--config", str(TINY), "--n", "4"], 2, "every k must be <="),
    Case(
        "example log --out over a file", _results, _status(example_main), ["--out", "results.json"], 2, "exists; pass"
    ),
    Case(
        "example log --out --overwrite moves the old file aside",
        _results,
        _status(example_main),
        ["--out", "results.json", "--overwrite", "--prompts", "3", "--steps", "1"],
        0,
        "was moved to",
        new_files=("results.json", "results.json.replaced-*"),
        moved={"results.json.replaced-*": '{"mine": true}\n'},
    ),
    Case("example log --out a folder", _log, _status(example_main), ["--out", "sub"], 2, "is a folder"),
    Case(
        "simulators --out into a run's folder",
        _finished_run,
        _status(simulators_main),
        ["--only", "V1", "--out", "run"],
        2,
        "would write into the run in",
    ),
    Case(
        "simulators --out into a run's checkpoints",
        _finished_run,
        _status(simulators_main),
        ["--only", "V1", "--out", "run/checkpoints/records"],
        2,
        "would write into the run in",
    ),
    Case("simulators --out a file", _results, _status(simulators_main), ["--out", "results.json"], 2, "is a file"),
    Case("rl_study --out into a run's folder", _finished_run, _status(study_main), ["--out", "run"], 2, "into the run"),
    Case(
        "rl_study --out under a file", _not_a_folder, _status(study_main), ["--out", "plain.txt/x"], 2, "cannot write"
    ),
    Case(
        "rl_study.real_model --out into a run's folder",
        _finished_run,
        _status(real_model_main),
        ["--out", "run"],
        2,
        "would write into the run in",
    ),
    Case(
        "figures --out into a run's folder",
        _records_and_run,
        _status(figures_main),
        ["--records", "records", "--out", "run"],
        2,
        "would write into the run in",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_misuse(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    case.setup(tmp_path)
    lock = None
    if case.live_run:
        lock = os.open(tmp_path / "run" / RUN_LOCK, os.O_RDWR | os.O_CREAT)
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.write(lock, b"4242\n")
    before = snapshot(tmp_path)
    try:
        status = case.command(case.argv)
    finally:
        if lock is not None:
            os.close(lock)
    captured = capsys.readouterr()
    assert status == case.status, captured.err
    assert case.words in captured.err
    after = snapshot(tmp_path)
    added = {name for name in after if name not in before}
    assert all(any(Path(name).match(pattern) for pattern in case.new_files) for name in added), added
    changed = {name for name in before if after.get(name) != before[name]}
    assert changed <= {name for name in before if any(Path(name).match(p) for p in case.new_files)}, changed
    for pattern, content in case.moved.items():
        (aside,) = tmp_path.glob(pattern)
        assert aside.read_text() == content


def test_stats_json_writes_the_results_after_checking_the_path(tmp_path, monkeypatch, capsys):
    """Control: a fresh --json path is written, with the same p-values the table prints."""
    monkeypatch.chdir(tmp_path)
    _log(tmp_path)
    assert stats_main(["log.jsonl", "--json", "out/results.json"]) == 0
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert record["alpha"] == 0.05 and set(record["steps"]) == {"0", "1", "2"}
    assert oct((tmp_path / "out" / "results.json").stat().st_mode & 0o777) != oct(0o600)  # the umask's, not mkstemp's


def test_without_the_guard_the_first_case_loses_the_log(tmp_path, monkeypatch, capsys):
    """Negative control: with write_guard's check made a no-op, ``--json`` over the log replaces
    the log, which the snapshot comparison above would report."""
    import write_guard

    monkeypatch.chdir(tmp_path)
    _log(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.setattr(write_guard, "check_file", lambda path, *args, **kwargs: Path(path))
    assert stats_main(["log.jsonl", "--json", "log.jsonl"]) == 0
    assert snapshot(tmp_path)["log.jsonl"] != before["log.jsonl"]


def test_eval_of_a_checkpoint_of_another_architecture_is_one_line(tmp_path, capsys):
    """A tiny:llama checkpoint evaluated with the tiny:qwen2 config: exit 2 naming the
    checkpoint, where torch's load_state_dict would raise a page of mismatched tensors."""
    from trainer.checkpoint import save_checkpoint
    from trainer.models import tiny_model, tiny_tokenizer

    model = tiny_model("llama", len(tiny_tokenizer()))
    checkpoint = save_checkpoint(tmp_path, 1, {"step": 1, "model": model.state_dict()})
    assert evaluate_main(["--config", str(TINY), "--checkpoint", str(checkpoint), "--n", "1", "--k", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {checkpoint} holds the weights of another model than the config's 'tiny:qwen2'" in err
    assert "Traceback" not in err
