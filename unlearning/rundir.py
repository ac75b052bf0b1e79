"""A run directory: one writer at a time, and records that agree with the checkpoint.

`run_lock(out)` makes a run the only writer of its directory: a lock file holding the owner's
pid, host and start time, created with O_EXCL; a lock whose owner (on this host) is gone is
stale and taken over. `stop_on_signal()` turns SIGINT/SIGTERM into a flag the loop reads
between steps. `prepare(out, cfg)` decides where a rerun continues: the newest
checkpoint whose steps every record holds; a record that cannot be read is set aside (renamed,
never deleted) and named; steps recorded after that checkpoint are recomputed. A finished
run is detected without writing anything, so it may sit on a read-only mount.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from .checkpoint import checkpoint_step, checkpoints
from .config import RunConfig

LOCK = ".geffect.lock"
RECORDS = ("train", "geffect", "eval")


class LockError(RuntimeError):
    """Another live process writes this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
    return True


@contextlib.contextmanager
def run_lock(out: Path, log=print):
    """Hold the exclusive lock of a run directory for the body; raise LockError if taken."""
    path = Path(out) / LOCK
    for _ in range(3):
        if _take(path):
            break
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            owner = None
        if owner is None and time.time() - path.stat().st_mtime < 10:
            continue                                   # its owner is still writing it
        stale = owner is None or (owner.get("host") == socket.gethostname()
                                  and not _alive(int(owner.get("pid", -1))))
        if not stale:
            raise LockError(f"{out} is being written by process {owner.get('pid')} on "
                            f"{owner.get('host')} (lock file {path}); wait for it, choose another "
                            f"--out, or delete the lock file if that process is gone")
        log(f"geffect: taking over the stale lock {path} (owner {owner} is gone)")
        path.unlink(missing_ok=True)
    else:
        raise LockError(f"could not take the lock {path}; another process keeps replacing it")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def _old_config(out: Path) -> RunConfig | None:
    path = out / "config.json"
    if not path.exists():
        return None
    try:
        return RunConfig.from_json(path.read_text())
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is damaged or not a geffect config ({err}); move it away to "
                         f"start over in {out}") from None


def check_identity(out: Path, cfg: RunConfig) -> None:
    """Resuming needs the same config; out, steps, checkpoint_every and eval_every may differ."""
    old = _old_config(out)
    if old is None or not checkpoints(out / "checkpoints"):
        return
    new = cfg.identity()
    diff = {k: (v, new[k]) for k, v in old.identity().items() if v != new[k]}
    if diff:
        raise ValueError(f"{out} holds a run with another config {diff} (old, new); choose "
                         f"another --out or delete that directory")


def _open_records(out: Path, open_record, log) -> dict:
    """The readable records; an unreadable one is renamed `<name>.nc.damaged-<time>`."""
    recs = {}
    for name in RECORDS:
        path = out / f"{name}.nc"
        if not path.exists():
            continue
        try:
            recs[name] = open_record(path, name)
        except Exception as err:                       # netCDF/HDF errors have no common type
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            log(f"geffect: {path} cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); kept as {aside}")
    return recs


def _missing(recs: dict, step: int, cfg: RunConfig) -> dict[str, list[int]]:
    """Steps before `step` that a record should hold and does not."""
    want = {"train": range(step)}
    if cfg.geffect_every:
        want["geffect"] = range(0, step, cfg.geffect_every)
    gaps = {}
    for name, steps in want.items():
        have = set(recs[name].step.values.tolist()) if name in recs else set()
        lost = [s for s in steps if s not in have]
        if lost:
            gaps[name] = lost
    return gaps


def _check_not_shrinking(out: Path, done: list[Path], cfg: RunConfig) -> None:
    if done and checkpoint_step(done[-1]) > cfg.steps:
        raise ValueError(f"{out} holds {checkpoint_step(done[-1])} steps; steps={cfg.steps} is "
                         f"fewer and would disagree with its records; use steps >= "
                         f"{checkpoint_step(done[-1])} or another --out")


def finished(out: Path, cfg: RunConfig, open_record) -> bool:
    """True when `out` holds this run complete (final checkpoint, records); reads only.

    `open_record(path, kind)` is `geffect.io.open_record`, passed in by the engine (the only
    module of `unlearning` that imports `geffect`)."""
    done = checkpoints(Path(out) / "checkpoints")
    _check_not_shrinking(Path(out), done, cfg)
    if not done or checkpoint_step(done[-1]) != cfg.steps:
        return False
    check_identity(Path(out), cfg)
    try:
        recs = {n: open_record(Path(out) / f"{n}.nc", n) for n in ("train", "geffect")
                if (Path(out) / f"{n}.nc").exists()}
    except Exception:                                   # damaged: `prepare` names and sets it aside
        return False
    return not _missing(recs, cfg.steps, cfg)


def prepare(out: Path, cfg: RunConfig, open_record, write_record, log=print) -> Path | None:
    """The checkpoint to continue from (None: step 0), records cut to agree with it.

    `open_record` and `write_record` are `geffect.io`'s, passed in by the engine."""
    check_identity(out, cfg)
    done = checkpoints(out / "checkpoints")
    _check_not_shrinking(out, done, cfg)
    recs = _open_records(out, open_record, log)
    start_ckpt = None
    for ckpt in reversed(done):
        gaps = _missing(recs, checkpoint_step(ckpt), cfg)
        if not gaps:
            start_ckpt = ckpt
            break
        log(f"geffect: not resuming from {ckpt}: the records lack steps "
            f"{ {k: (v[0], v[-1]) for k, v in gaps.items()} } (first, last) before it")
    start = checkpoint_step(start_ckpt) if start_ckpt else 0
    for name, ds in recs.items():
        keep = (ds.step <= start) if name == "eval" and start else (ds.step < start)
        if bool(keep.all()):
            continue
        path = out / f"{name}.nc"
        extra = ds.step.values[~keep.values].tolist()
        log(f"geffect: {path.name} steps {extra[0]}..{extra[-1]} come after the checkpoint "
            f"(step {start}); recomputing them")
        if bool(keep.any()):
            write_record(ds.sel(step=keep), path, name)
        else:
            path.unlink()
    return start_ckpt


@contextlib.contextmanager
def stop_on_signal():
    """Collect SIGINT/SIGTERM into a list the loop checks at the end of each step; a second
    signal interrupts at once. Outside the main thread signals cannot be caught: no-op."""
    stop: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop:
            raise KeyboardInterrupt
        stop.append(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
