"""Runs that never lose work (issue 19, cases 3-5, 9, 10) on tiny models.

One writer per run directory; SIGINT/SIGTERM and kills at any point of a step resume to
records bit-identical to an uninterrupted run; damaged or deleted records are named, kept
aside and recomputed; run directories move, and finished ones are only read.
"""
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import xarray as xr

import unlearning.checkpoint as checkpoint_mod
import unlearning.engine as engine
from geffect.io import open_record
from unlearning.checkpoint import checkpoints
from unlearning.config import RunConfig
from unlearning.models import load_model
from unlearning.rundir import LOCK, LockError, run_lock

STEPS = 3


def cfg_at(out, **kw) -> RunConfig:
    base = dict(method="ga", model="tiny-llama", n_forget=4, n_retain=8, steps=STEPS,
                batch_size=2, lr=1e-2, geffect_every=1, probe_forget=1, probe_retain=1,
                out=str(out))
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every resumed one must reproduce bit for bit."""
    return engine.run(cfg_at(tmp_path_factory.mktemp("straight") / "run"), progress=False)


def assert_same_run(a, b):
    for name in ("train.nc", "geffect.nc"):
        ra, rb = open_record(a / name), open_record(b / name)
        assert ra.step.values.tolist() == list(range(STEPS)), name
        xr.testing.assert_equal(ra, rb)                       # exact values; attrs may differ
    pa = load_model(str(checkpoints(a / "checkpoints")[-1]))[0].state_dict()
    pb = load_model(str(checkpoints(b / "checkpoints")[-1]))[0].state_dict()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


class Killed(BaseException):
    """Stands in for SIGKILL: no `except Exception` handler sees it."""


def killer(fn, nth):
    calls = []

    def wrapped(*a, **kw):
        calls.append(1)
        if len(calls) == nth:
            raise Killed
        return fn(*a, **kw)
    return wrapped


# Five places a process can die, each counted from the start of one (resumed) run: GA calls
# split_outputs twice a step (objective, retain NLL), mean_nll once, append_record twice
# (train.nc, geffect.nc), torch.save once per checkpoint.
KILLS = [
    ("in the forward of its second step", engine, "split_outputs", 3),
    ("after the backward, before the update", engine, "mean_nll", 1),
    ("after the update, before any record", engine, "append_record", 1),
    ("between train.nc and geffect.nc", engine, "append_record", 2),
    ("inside the next checkpoint write", checkpoint_mod.torch, "save", 1),
]


def test_kill_at_any_of_five_points_then_resume_gives_bit_identical_records(tmp_path, monkeypatch, straight):
    """One run killed five times in a row, at a different point each time, then finished."""
    cfg = cfg_at(tmp_path / "run", checkpoint_every=1)
    for where, obj, attr, nth in KILLS:
        with monkeypatch.context() as m:
            m.setattr(obj, attr, killer(getattr(obj, attr), nth))
            with pytest.raises(Killed):
                engine.run(cfg, progress=False)
        ckpt = checkpoints(tmp_path / "run" / "checkpoints")
        assert [c.name for c in ckpt] == ["step-000001"], where       # killed before step 2 ends
    engine.run(cfg, progress=False)
    assert_same_run(straight, tmp_path / "run")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_without_checkpoint_every_checkpoints_and_the_rerun_continues(tmp_path, monkeypatch, straight, sig):
    step_fn = engine.train_step
    before = signal.getsignal(sig)

    def interrupted_at_0(s, step):
        if step == 0:
            os.kill(os.getpid(), sig)                  # arrives mid-step; the step completes
        return step_fn(s, step)

    cfg = cfg_at(tmp_path / "run")
    with monkeypatch.context() as m:
        m.setattr(engine, "train_step", interrupted_at_0)
        with pytest.raises(engine.Interrupted, match=f"{sig.name} after step 0.*step-000001"):
            engine.run(cfg, progress=False)
    assert open_record(tmp_path / "run" / "train.nc").step.values.tolist() == [0]
    assert [c.name for c in checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000001"]
    assert signal.getsignal(sig) is before                                  # handler restored
    engine.run(cfg, progress=False)
    assert_same_run(straight, tmp_path / "run")


@pytest.mark.parametrize("damage", ["truncated geffect.nc", "empty train.nc", "deleted geffect.nc"])
def test_damaged_or_deleted_records_are_named_kept_aside_and_recomputed(tmp_path, capsys, straight, damage):
    run = tmp_path / "run"
    engine.run(cfg_at(run, steps=1, checkpoint_every=1), progress=False)
    what, name = damage.split(" ")
    path = run / name
    if what == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif what == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    engine.run(cfg_at(run, checkpoint_every=1), progress=False)
    said = capsys.readouterr().out
    if what != "deleted":
        (aside,) = run.glob(f"{name}.damaged-*")
        assert f"{path} cannot be read" in said and str(aside) in said
    assert "not resuming from" in said and "step-000001" in said
    assert_same_run(straight, run)                      # no gap: all steps, recomputed exactly


HOLD = """
import sys, time
from pathlib import Path
from unlearning.rundir import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_fails_and_leaves_the_first_ones_files_intact(tmp_path):
    run = tmp_path / "run"
    engine.run(cfg_at(run, steps=1), progress=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"being written by process {holder.pid}"):
            engine.run(cfg_at(run, steps=2, lr=0.5), progress=False)
    finally:
        holder.kill()
        holder.wait()
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK}
    assert after == before


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    import json
    import socket
    (run / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    engine.run(cfg_at(run, steps=1), progress=False)
    assert "stale lock" in capsys.readouterr().out and not (run / LOCK).exists()
    with run_lock(run), pytest.raises(LockError):     # a live owner (this process) is respected
        engine.run(cfg_at(run, steps=2), progress=False)


def test_run_directories_move_and_finished_ones_are_only_read(tmp_path, monkeypatch, straight):
    first = tmp_path / "first"
    engine.run(cfg_at(first, steps=1), progress=False)
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(first, moved)
    engine.run(cfg_at(moved), progress=False)                   # out is not part of the identity
    assert_same_run(straight, moved)
    stamps = {p: p.stat().st_mtime_ns for p in moved.rglob("*")}

    def no_writes(*a, **kw):
        raise AssertionError("a finished run was written to")
    monkeypatch.setattr(engine, "run_lock", no_writes)          # stands in for a read-only mount
    monkeypatch.setattr(RunConfig, "save", no_writes)
    assert engine.run(cfg_at(moved), progress=False) == moved
    assert {p: p.stat().st_mtime_ns for p in moved.rglob("*")} == stamps
    with pytest.raises(ValueError, match=f"holds {STEPS} steps; steps=1 is fewer"):
        engine.run(cfg_at(moved, steps=1), progress=False)
    assert {p: p.stat().st_mtime_ns for p in moved.rglob("*")} == stamps
