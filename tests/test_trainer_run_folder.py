"""A run's folder under misuse: a second run into it, two processes at once, a resume with a changed
config, damaged checkpoints, a kill while pruning, a diverging run, a read-only or full disk. Each
test performs the misuse and checks the refusal or the safe outcome, and that nothing on disk was
lost."""

import errno
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, TINY, run_trainer, snapshot, without_timings
from trainer import loop, run
from trainer.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_newest_checkpoint,
    save_checkpoint,
)
from trainer.config import load_config
from trainer.logs import read_jsonl
from trainer.rewards import get_reward

SHORT = ("steps=4", "save_every=2")  # two checkpoints: step-2 and step-4


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step run (checkpoints at steps 2 and 4); tests work on copies (:func:`_copy_of`)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run_trainer(out, *SHORT) == 0
    return out


def _copy_of(finished, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


@pytest.fixture
def no_model_load(monkeypatch):
    """The refusals under test must come before the model loads."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(run, "load_policy", refuse)


# --- a run's folder is protected -----------------------------------------------------------------


def test_a_new_run_into_a_folder_holding_a_run_is_refused(finished, tmp_path, capsys, no_model_load):
    folder = _copy_of(finished, tmp_path)
    before = snapshot(folder)
    assert run_trainer(folder, *SHORT) == 2
    err = capsys.readouterr().err
    assert f"output_dir {folder} holds a run" in err and "--resume" in err and "--overwrite" in err
    assert run_trainer(folder, *SHORT, flags=["--resume", "--overwrite"]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert snapshot(folder) == before


def test_overwrite_moves_the_old_run_aside(finished, tmp_path, capsys):
    folder = _copy_of(finished, tmp_path)
    (folder / "notes.txt").write_text("mine")  # not a run record: stays where it is
    before = snapshot(folder)
    assert run_trainer(folder, "steps=2", "save_every=2", "seed=1", flags=["--overwrite"]) == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert f"moved to {aside}" in capsys.readouterr().err
    assert snapshot(aside) | {"notes.txt": b"mine"} == before
    assert [m["step"] for m in read_jsonl(folder / "metrics.jsonl")] == [1, 2]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-2"]
    assert load_config(folder / "config.yaml").seed == 1 and (folder / "notes.txt").read_text() == "mine"


def gated_first_number(prompts, completions, answers):
    """The first_number reward, once the file named by $RUN_FOLDER_GATE is gone: a test holds a
    run there, with its folder claimed."""
    gate = pathlib.Path(os.environ["RUN_FOLDER_GATE"])
    while gate.exists():
        time.sleep(0.02)
    return get_reward("first_number")(prompts, completions, answers)


def _held_by(folder, pid) -> bool:
    lock = folder / "run.lock"
    return lock.exists() and lock.read_text() == f"{pid}\n"


def test_a_second_process_in_a_running_folder_refuses_at_once(tmp_path, capsys, no_model_load):
    """The same command twice (or with --resume, or --overwrite): the second refuses before
    loading its model and writes nothing; the first, held at its first reward call meanwhile,
    logs every step and rollout once."""
    folder, gate = tmp_path / "run", tmp_path / "gate"
    gate.touch()
    reward = f"reward={__name__}:gated_first_number"
    sets = [arg for override in (f"output_dir={folder}", reward, *SHORT) for arg in ("--set", override)]
    command = [sys.executable, "trainer/run.py", "--config", str(TINY), "--no-progress", *sets]
    with (tmp_path / "first.err").open("w") as log:
        first = subprocess.Popen(command, cwd=ROOT, stderr=log, env=os.environ | {"RUN_FOLDER_GATE": str(gate)})
    try:
        while first.poll() is None and not _held_by(folder, first.pid):
            time.sleep(0.05)
        assert run_trainer(folder, reward, *SHORT) == 2
        assert run_trainer(folder, reward, *SHORT, flags=["--resume"]) == 2
        assert run_trainer(folder, reward, *SHORT, flags=["--overwrite"]) == 2  # never moves a live run aside
    finally:
        gate.unlink()
        assert first.wait(timeout=300) == 0, (tmp_path / "first.err").read_text()[-2000:]
    err = capsys.readouterr().err
    assert err.count(f"output_dir {folder} is in use by another run (process {first.pid} ") == 3
    assert not list(tmp_path.glob("run.replaced-*"))
    assert [m["step"] for m in read_jsonl(folder / "metrics.jsonl")] == [1, 2, 3, 4]
    keys = [(r["step"], r["prompt_id"], r["rollout"]) for r in read_jsonl(folder / "rollouts.jsonl")]
    assert len(keys) == len(set(keys)) == 4 * 64


# --- resume with a changed config ----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        ("loss=ctpo", "loss: 'grpo' in the run, 'ctpo' asked"),
        ("advantage=rloo", "advantage: 'dr_grpo' in the run, 'rloo' asked"),
        ("budget=48", "budget: 64 in the run, 48 asked"),
        ("allocation=vip", "allocation: 'uniform' in the run, 'vip' asked"),
        ("seed=1", "seed: 0 in the run, 1 asked"),
        ("max_prompts=32", "max_prompts: 64 in the run, 32 asked"),
        ("model=tiny:llama", "model: 'tiny:qwen2' in the run, 'tiny:llama' asked"),
        ("log_z_norm=true", "log_z_norm: False in the run, True asked"),
    ],
)
def test_a_resume_with_a_changed_config_is_refused_naming_the_field(
    finished, tmp_path, capsys, no_model_load, change, named
):
    folder = _copy_of(finished, tmp_path)
    before = snapshot(folder)
    assert run_trainer(folder, "steps=6", *SHORT[1:], change, flags=["--resume"]) == 2
    err = capsys.readouterr().err
    assert f"--resume with a config that differs from the run's {folder / 'config.yaml'}: {named}" in err
    assert "may change only steps, save_every" in err
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda path: path.unlink(), "holds a run but no config.yaml to check the config against"),
        (lambda path: path.write_text("loss: [grpo\n"), "config.yaml cannot be read back"),
        (lambda path: path.write_text("loss: ppo\n"), "config.yaml cannot be read back (loss must be one of"),
    ],
    ids=["missing", "not-yaml", "invalid"],
)
def test_a_resume_without_a_readable_run_config_is_refused(finished, tmp_path, capsys, no_model_load, spoil, message):
    folder = _copy_of(finished, tmp_path)
    spoil(folder / "config.yaml")
    before = snapshot(folder)
    assert run_trainer(folder, *SHORT, flags=["--resume"]) == 2
    assert message in capsys.readouterr().err
    assert snapshot(folder) == before


def test_a_resume_may_change_steps_and_saving_and_records_it(finished, tmp_path):
    """More steps and another save_every: the run goes on from step 4 to step 6 (that this equals
    an uninterrupted run is test_trainer_e2e's resume test); config.yaml holds the new values
    and config_changes.jsonl the change."""
    folder = _copy_of(finished, tmp_path)
    assert run_trainer(folder, "steps=6", "save_every=3", flags=["--resume"]) == 0
    metrics = read_jsonl(folder / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert without_timings(metrics[:4]) == without_timings(read_jsonl(finished / "metrics.jsonl"))
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-4", "step-6"]
    saved = load_config(folder / "config.yaml")
    assert (saved.steps, saved.save_every) == (6, 3)
    (row,) = read_jsonl(folder / "config_changes.jsonl")
    moved = [str(finished), str(folder)]  # the copy is the finished run in another folder
    assert row["step"] == 4 and row["changes"] == {"steps": [4, 6], "save_every": [2, 3], "output_dir": moved}


# --- a resume checks what it resumes -------------------------------------------------------------


def _arithmetic_file(path, answers_shift=0):
    """A JSON Lines dataset of the tiny config's a+b= problems (answers moved by ``answers_shift``)."""
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b + answers_shift)} for a in range(8) for b in range(8)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_resume_on_a_changed_dataset_is_refused_naming_both_digests(tmp_path, capsys):
    data = _arithmetic_file(tmp_path / "data.jsonl")
    folder = tmp_path / "run"
    assert run_trainer(folder, f"dataset={data}", "steps=2", "save_every=2") == 0
    _arithmetic_file(data, answers_shift=1)  # the same path, other content
    before = snapshot(folder)
    assert run_trainer(folder, f"dataset={data}", "steps=4", "save_every=2", flags=["--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the dataset {str(data)!r} is not the one the run was trained on" in err and "SHA-256" in err
    assert snapshot(folder) == before
    _arithmetic_file(data)  # the control: the run's own data resumes
    assert run_trainer(folder, f"dataset={data}", "steps=4", "save_every=2", flags=["--resume"]) == 0


@pytest.mark.parametrize(
    "spoil, message",
    [
        (
            lambda text: text[: text.rindex("{")] + text[text.rindex("{") : -20],
            "has no row of step 4 (its last line is cut short)",
        ),
        (lambda text: text.replace('{"step": 2', '{"step": 2 oops', 1), "line 2 is not a JSON row"),
    ],
    ids=["cut-last-row", "corrupt-middle-line"],
)
def test_a_resume_whose_metrics_do_not_reach_the_checkpoint_changes_nothing(finished, tmp_path, capsys, spoil, message):
    """With a change a resume may make (steps=6): still nothing is rewritten, config.yaml included."""
    folder = _copy_of(finished, tmp_path)
    metrics = folder / "metrics.jsonl"
    metrics.write_text(spoil(metrics.read_text()))
    before = snapshot(folder)
    assert run_trainer(folder, "steps=6", SHORT[1], flags=["--resume"]) == 2
    assert message in capsys.readouterr().err
    assert snapshot(folder) == before


def test_a_resume_with_no_checkpoint_keeps_the_old_logs(finished, tmp_path, capsys):
    """A run killed before its first checkpoint: the resume starts at step 0 with new logs, and
    the killed run's logs stay beside them."""
    folder = _copy_of(finished, tmp_path)
    shutil.rmtree(folder / "checkpoints")
    old = {name: (folder / name).read_text() for name in ("metrics.jsonl", "rollouts.jsonl")}
    assert run_trainer(folder, *SHORT, flags=["--resume"]) == 0
    assert "no checkpoint" in capsys.readouterr().err
    for name, text in old.items():
        (kept,) = folder.glob(f"{name}.replaced-*")
        assert kept.read_text() == text
    assert [m["step"] for m in read_jsonl(folder / "metrics.jsonl")] == [1, 2, 3, 4]


# --- checkpoints are verified ---------------------------------------------------------------------


def _same_metrics(folder, other) -> bool:
    """The two runs logged the same metrics, but for their timings."""
    return without_timings(read_jsonl(folder / "metrics.jsonl")) == without_timings(read_jsonl(other / "metrics.jsonl"))


def _zero_the_middle(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_zero_the_middle, _truncate], ids=["zeroed", "truncated"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(finished, tmp_path, capsys, damage):
    """The damaged step-4 is named, kept as step-4.corrupt, and the run resumes from step-2:
    steps 3 and 4 come out as in the undamaged run."""
    folder = _copy_of(finished, tmp_path)
    newest = folder / "checkpoints" / "step-4" / "state.pt"
    damage(newest)
    damaged = newest.read_bytes()
    assert run_trainer(folder, *SHORT, flags=["--resume"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {newest.parent} is unusable" in err and "step-4.corrupt" in err
    assert (folder / "checkpoints" / "step-4.corrupt" / "state.pt").read_bytes() == damaged
    assert _same_metrics(folder, finished)
    assert load_checkpoint(folder / "checkpoints" / "step-4")["step"] == 4  # rewritten, digest checked


def test_a_resume_with_no_usable_checkpoint_stops_and_changes_nothing(finished, tmp_path, capsys):
    folder = _copy_of(finished, tmp_path)
    _truncate(folder / "checkpoints" / "step-4" / "state.pt")
    _zero_the_middle(folder / "checkpoints" / "step-2" / "state.pt")
    before = snapshot(folder)
    assert run_trainer(folder, *SHORT, flags=["--resume"]) == 1
    assert f"no usable checkpoint in {folder / 'checkpoints'}: step-4, step-2" in capsys.readouterr().err
    assert snapshot(folder) == before


def test_a_checkpoint_without_a_digest_loads_with_a_warning(tmp_path, capsys):
    save_checkpoint(tmp_path, 2, {"step": 2, "x": torch.arange(3)})
    (tmp_path / "checkpoints" / "step-2" / "state.pt.sha256").unlink()
    path, state = load_newest_checkpoint(tmp_path)
    assert path.name == "step-2" and state["step"] == 2
    assert "has no SHA-256 digest" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_match_its_digest_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, 2, {"step": 2, "x": torch.arange(1000)})
    _zero_the_middle(path / "state.pt")
    with pytest.raises(CheckpointError, match=f"{path / 'state.pt'} does not match its SHA-256 digest"):
        load_checkpoint(path)


def test_a_kill_while_pruning_leaves_no_empty_checkpoint(tmp_path, monkeypatch):
    """A kill in the middle of deleting step-10 (its state.pt already gone) leaves a .trash
    directory, never an empty step-10; the next save removes it."""
    for step in (10, 20):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    real_rmtree = shutil.rmtree

    def killed_halfway(path, *args, **kwargs):
        path = pathlib.Path(path)
        if path.name.endswith(".trash") and path.exists():
            (path / "state.pt").unlink()
            raise KeyboardInterrupt("killed")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 30, {"step": 30}, keep=2)
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-10.trash", "step-20", "step-30"]
    assert latest_checkpoint(tmp_path).name == "step-30"
    save_checkpoint(tmp_path, 40, {"step": 40}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-30", "step-40"]


# --- divergence -----------------------------------------------------------------------------------


def test_logits_that_turn_non_finite_stop_the_run_before_sampling(tmp_path, monkeypatch, capsys):
    """Step 3's model gives NaN logits (as weights blown up by a huge learning rate do): the run
    stops naming step 3 and the generation rather than sampling from no distribution; the
    step-2 checkpoint is the newest."""
    real, calls = loop.Trainer._generate, []

    def poisoned(self, timer, indices, counts):
        calls.append(1)
        if len(calls) == 3:
            head = self.policy.get_output_embeddings()
            monkeypatch.setattr(
                head, "forward", lambda hidden: torch.full((*hidden.shape[:-1], head.out_features), float("nan"))
            )
        return real(self, timer, indices, counts)

    monkeypatch.setattr(loop.Trainer, "_generate", poisoned)
    folder = tmp_path / "run"
    assert run_trainer(folder, *SHORT) == 1
    err = capsys.readouterr().err
    assert "training diverged at step 3: the next-token logits at temperature 1.0 are not finite (generation)" in err
    assert f"the newest checkpoint: {folder / 'checkpoints' / 'step-2'}" in err and "Traceback" not in err


_REWARD_CALLS = []


def nan_after_the_preflight(prompts, completions, answers):
    """first_number's rewards on the pre-flight call, NaN on the calls after it (training's)."""
    _REWARD_CALLS.append(1)
    values = get_reward("first_number")(prompts, completions, answers)
    return values if len(_REWARD_CALLS) == 1 else [float("nan")] * len(values)


def test_a_reward_that_turns_nan_in_training_stops_the_run_with_one_message(tmp_path, capsys):
    _REWARD_CALLS.clear()
    folder = tmp_path / "run"
    assert run_trainer(folder, *SHORT, f"reward={__name__}:nan_after_the_preflight") == 1
    err = capsys.readouterr().err
    assert "reward function nan_after_the_preflight returned nan" in err and "Traceback" not in err
    assert "the newest checkpoint: none" in err


class _InfiniteGradient(torch.autograd.Function):
    """The identity, whose backward pass multiplies the gradient by inf."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize(
    "poison, named",
    [(lambda loss: loss * float("nan"), "the loss is nan"), (_InfiniteGradient.apply, "the gradient norm is")],
    ids=["loss", "gradient"],
)
def test_a_diverging_run_stops_at_the_first_non_finite_step(tmp_path, monkeypatch, capsys, poison, named):
    """Step 3's loss (or gradient) turns non-finite: the run stops naming step 3 and the quantity,
    the logs hold valid rows of steps 1-2 only, and the step-2 checkpoint is intact."""
    real_loss, calls = loop.policy_loss, []

    def policy_loss(*args, **kwargs):  # one call per step with the tiny config (one micro-batch)
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return poison(loss) if len(calls) == 3 else loss

    monkeypatch.setattr(loop, "policy_loss", policy_loss)
    folder = tmp_path / "run"
    assert run_trainer(folder, *SHORT) == 1
    err = capsys.readouterr().err
    assert "training diverged at step 3: " + named in err
    assert f"the newest checkpoint: {folder / 'checkpoints' / 'step-2'}" in err
    assert [m["step"] for m in read_jsonl(folder / "metrics.jsonl")] == [1, 2]
    assert {r["step"] for r in read_jsonl(folder / "rollouts.jsonl")} == {1, 2}
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-2"]
    assert load_checkpoint(folder / "checkpoints" / "step-2")["step"] == 2


# --- read-only or full disk ----------------------------------------------------------------------


def _refuse_new_files_in(monkeypatch, folder):
    """Root ignores permission bits: make os.open raise what the kernel raises for any other user
    creating a file in the read-only ``folder``."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if pathlib.Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


def test_a_read_only_output_dir_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys, no_model_load):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        _refuse_new_files_in(monkeypatch, folder)
    try:
        assert run_trainer(folder, *SHORT) == 2
    finally:
        folder.chmod(0o755)
    err = capsys.readouterr().err
    assert f"cannot write {folder}/.write-probe-" in err and "permission denied" in err
    assert list(folder.iterdir()) == []


def test_a_full_disk_is_named_before_the_model_loads(tmp_path, monkeypatch, capsys, no_model_load):
    def full(descriptor, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    assert run_trainer(tmp_path / "run", *SHORT) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'run'}/.write-probe-" in err and "no space left on device" in err
    assert list((tmp_path / "run").iterdir()) == []


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: a write past it writes what fits, then raises
    ENOSPC, as the kernel does."""

    def __init__(self, path, mode, room):
        super().__init__(path, mode)
        self.room = self.tell() + room

    def write(self, data):
        fits = max(0, self.room - self.tell())
        if len(data) > fits:
            super().write(bytes(data)[:fits])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def _fill_the_disk_at(monkeypatch, name, nth, room):
    """From the ``nth`` opening of a file called ``name`` for writing on, the disk has ``room``
    bytes left for it."""
    real_open, count = pathlib.Path.open, []

    def opened(self, mode="r", *args, **kwargs):
        if self.name == name and mode in ("wb", "a"):
            count.append(1)
            if len(count) >= nth:
                full = _FullDisk(self, mode.replace("b", ""), room)
                return full if "b" in mode else io.TextIOWrapper(full)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", opened)


@pytest.mark.parametrize(
    "name, nth, kept_rows",
    [("state.pt", 2, [1, 2, 3, 4]), ("metrics.jsonl", 3, [1, 2])],
    ids=["checkpoint", "metrics-log"],
)
def test_no_space_left_stops_the_run_naming_the_file_and_a_resume_recovers(
    finished, tmp_path, monkeypatch, capsys, name, nth, kept_rows
):
    """The disk fills while writing the step-4 checkpoint (through torch.save) or step 3's
    metrics row: the run stops naming the file and "no space left on device"; the step-2
    checkpoint is intact, no partial checkpoint is left, and once there is space a resume gives
    the metrics of the run that never stopped."""
    folder = tmp_path / "run"
    _fill_the_disk_at(monkeypatch, name, nth, room=20)
    assert run_trainer(folder, *SHORT) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    failed = folder / "checkpoints" / "step-4.tmp" / "state.pt" if name == "state.pt" else folder / "metrics.jsonl"
    assert f"cannot write {failed}: no space left on device" in err
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-2"]
    assert load_checkpoint(folder / "checkpoints" / "step-2")["step"] == 2
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[: len(kept_rows)]] == kept_rows
    assert run_trainer(folder, *SHORT, flags=["--resume"]) == 0
    assert _same_metrics(folder, finished)
