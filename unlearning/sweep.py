"""A grid of SGA runs over smoothing rates and sign conventions, one record per run.

Each run lives in `<out>/<convention>_r<rate>/`; a finished run (final checkpoint present) is
skipped, an interrupted one resumes. The combined record (`analysis.reduce.combine_runs`)
stacks the runs along `run` with `method`, `smoothing_rate` and `convention` coordinates.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .checkpoint import checkpoints, load_state
from .config import RunConfig
from .engine import run


def run_name(convention: str, rate: float) -> str:
    return f"{convention}_r{rate:+.3f}"


def sweep(base: RunConfig, rates: list[float], conventions: list[str], out: Path,
          progress: bool = True) -> list[Path]:
    """Run every (convention, rate) not finished yet; returns the run directories."""
    dirs = []
    for conv in conventions:
        for rate in rates:
            if conv == "split" and rate < 0:
                continue  # the split reading is defined for 0 <= r <= 1 only
            cfg = dataclasses.replace(base, method="sga", out=str(out / run_name(conv, rate)),
                                      hparams={**base.hparams, "r": rate, "convention": conv})
            done = checkpoints(Path(cfg.out) / "checkpoints")
            if not (done and load_state(done[-1])["step"] >= cfg.steps):
                run(cfg, progress=progress)
            dirs.append(Path(cfg.out))
    from analysis.reduce import combine_runs

    tmp = out / "sweep.nc.tmp"
    combine_runs(dirs).to_netcdf(tmp)
    tmp.replace(out / "sweep.nc")                   # atomic: readers never see half a file
    return dirs
