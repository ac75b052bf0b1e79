"""A grid of SGA runs over smoothing rates and sign conventions, one record per run.

Each run lives in `<out>/<convention>_r<rate>/`; a finished run is skipped, an interrupted
one resumes. Every (convention, rate) is validated before the first run starts, and run
directory names are built only from validated values. The combined record
(`analysis.reduce.combine_runs`) stacks the runs along `run` with `method`,
`smoothing_rate` and `convention` coordinates.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from .config import RunConfig
from .engine import run


def run_name(convention: str, rate: float) -> str:
    return f"{convention}_r{rate:+.3f}"


def parse_list(text: str, typ, flag: str) -> list:
    """'a,b,c' -> [typ(a), ...]; a bad item raises naming the flag and the item."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{flag} needs at least one value; got {text!r}")
    out = []
    for t in items:
        try:
            v = typ(t)
        except ValueError:
            raise ValueError(f"{flag}: {t!r} is not a {typ.__name__}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{flag}: {t!r} is not finite")
        out.append(v)
    return out


def grid(base: RunConfig, rates: list[float], conventions: list[str], out: Path) -> list[RunConfig]:
    """The validated run configs of the grid (RunConfig checks r and the convention)."""
    cfgs = []
    for conv in conventions:
        for rate in rates:
            if conv == "split" and rate < 0:
                continue  # the split reading is defined for 0 <= r <= 1 only
            hp = {**base.hparams, "r": rate, "convention": conv}
            cfg = dataclasses.replace(base, method="sga", hparams=hp)     # validates r, conv
            cfgs.append(dataclasses.replace(cfg, out=str(out / run_name(conv, rate))))
    return cfgs


def sweep(base: RunConfig, rates: list[float], conventions: list[str], out: Path,
          progress: bool = True) -> list[Path]:
    """Run every (convention, rate) not finished yet; returns the run directories."""
    cfgs = grid(base, rates, conventions, out)      # raises before any directory is made
    dirs = [run(cfg, progress=progress) for cfg in cfgs]
    from analysis.reduce import combine_runs

    tmp = out / "sweep.nc.tmp"
    combine_runs(dirs).to_netcdf(tmp)
    tmp.replace(out / "sweep.nc")                   # atomic: readers never see half a file
    return dirs
