"""Reading run directories into xarray records, without torch.

A run directory (written by `unlearning.engine.run`) holds `config.json`, `train.nc`,
`geffect.nc` (when G-effects were recorded), `eval.nc` (when evaluation ran) and
`checkpoints/`. The layout of each record is written down in `geffect/SCHEMA.md`.

This module deliberately reads netCDF with `xarray.open_dataset(...).load()` itself instead of
going through `geffect.io`: `analysis` must never import torch, and `geffect/__init__.py`
does (the recorder is torch code).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

RECORDS = ("train", "geffect", "eval")

# Variables that analysis derives (combine_runs); the record's own come from its `definitions`.
DERIVED = {
    "geffect_total": "whole-model G-effect: geffect summed over groups, per probe",
    "geffect_quantile": "quartiles over the probe's instances of the instance G-effect "
                        "<grad L, grad R_i> summed over groups",
    "probe_risk": "R_probe at the step's parameters (before its update): mean (or sum, see "
                  "risk_reduction) of R_i over the probe's fixed instances",
    "risk_quantile": "quartiles over the probe's instances of R_i",
    "n_probe_instances": "number of fixed probe instances per probe",
    "summary": "evaluation metrics (eval_summary.json names) at each evaluated step",
    "eval_nll": "mean evaluation NLL over the split's instances",
}
UNITS = {"geffect": "nat^2", "geffect_instance": "nat^2", "geffect_pointwise": "nat^2",
         "geffect_total": "nat^2", "geffect_quantile": "nat^2", "risk": "nat/token",
         "probe_risk": "nat/token", "risk_quantile": "nat/token", "nll_forget": "nat/token",
         "nll_retain": "nat/token", "eval_nll": "nat/token", "loss": "nat",
         "objective_loss": "nat", "loss_term": "nat", "grad_sq_norm": "nat^2",
         "risk_grad_sq_norm": "nat^2"}


def _schema_definitions() -> dict:
    try:  # geffect.schema imports no torch (geffect/__init__.py is lazy)
        from geffect.schema import DEFINITIONS
    except ImportError:
        return {}
    return dict(DEFINITIONS)


def describe(ds: xr.Dataset) -> xr.Dataset:
    """A copy whose variables carry their definition (and unit) as attrs, for reading.

    Definitions come from the record's `definitions` attr (geffect/SCHEMA.md), else the
    schema's, plus those of the variables analysis derives; Jupyter's Dataset view shows them
    per variable. Values are not touched.
    """
    import json
    try:
        own = json.loads(ds.attrs.get("definitions", "{}"))
    except ValueError:
        own = {}
    defs = {**_schema_definitions(), **DERIVED, **own}
    out = ds.copy()
    for name in out.data_vars:
        extra = {k: v for k, v in (("definition", defs.get(name)), ("units", UNITS.get(name)))
                 if v is not None and k not in out[name].attrs}
        out[name].attrs.update(extra)
    return out


def open_nc(path: Path) -> xr.Dataset:
    """The whole netCDF file in memory, with the file handle closed again."""
    with xr.open_dataset(path) as ds:
        return ds.load()


@dataclass(frozen=True)
class Run:
    """The records of one run directory; a missing record is None.

    Attributes:
        path: the run directory.
        config: the run configuration (`config.json`, else the `config` attr of a record).
        train, geffect, eval: the records.
    """

    path: Path
    config: dict
    train: xr.Dataset | None = None
    geffect: xr.Dataset | None = None
    eval: xr.Dataset | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return str(self.config.get("method", "?"))

    @property
    def hparams(self) -> dict:
        """Method hyperparameters: the config's `hparams`, or top-level keys (older records)."""
        return dict(self.config.get("hparams") or self.config)

    @property
    def smoothing_rate(self) -> float:
        """SGA's r; 0 for GA (the r = 0 case of both readings); NaN for other methods."""
        if self.method == "ga":
            return 0.0
        r = self.hparams.get("r", self.hparams.get("smoothing_rate"))
        return float(r) if r is not None else math.nan

    @property
    def convention(self) -> str:
        """SGA's sign reading ("gls" or "split"); "" for methods without one."""
        conv = self.hparams.get("convention")
        if conv is None and self.method == "sga":
            conv = "gls"  # the objective's default (unlearning/objectives/sga.py)
        return str(conv or "")

    @property
    def label(self) -> str:
        """A short legend label: the method, with r and the convention for SGA."""
        if self.method == "sga" and not math.isnan(self.smoothing_rate):
            return f"sga {self.convention} r={self.smoothing_rate:+g}"
        return self.method


def _config(path: Path, records: dict[str, xr.Dataset | None]) -> dict:
    cfg_path = path / "config.json"
    if cfg_path.exists():
        return json.loads(cfg_path.read_text())
    for ds in records.values():
        if ds is not None and "config" in ds.attrs:
            return json.loads(ds.attrs["config"])
    return {}


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f"{r}.nc").exists() for r in RECORDS)


def load_run(path: Path | str) -> Run:
    """Every record of one run directory, loaded into memory, variables described (`describe`).

    Raises:
        FileNotFoundError: the directory holds none of train.nc, geffect.nc, eval.nc.
    """
    path = Path(path)
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path} is not a run directory: expected at least one of "
                                f"{', '.join(r + '.nc' for r in RECORDS)} in it")
    records = {r: describe(open_nc(path / f"{r}.nc")) if (path / f"{r}.nc").exists() else None
               for r in RECORDS}
    return Run(path=path, config=_config(path, records), **records)


def expand_run_dirs(paths: list[Path | str]) -> list[Path]:
    """Run directories named directly, or found one level below a sweep directory."""
    found: list[Path] = []
    for p in map(Path, paths):
        if is_run_dir(p):
            found.append(p)
            continue
        subs = sorted(q for q in p.iterdir() if is_run_dir(q)) if p.is_dir() else []
        if not subs:
            raise FileNotFoundError(f"{p} is neither a run directory (train.nc, geffect.nc or "
                                    f"eval.nc) nor a directory of run directories")
        found += subs
    return found


def open_runs(*paths: Path | str) -> xr.Dataset:
    """Every run under the given directories as one `run`-indexed dataset, described.

    `analysis.open_runs("demo_out/runs")` is `describe(combine_runs(...))`: a sweep or demo
    directory (runs one level below) or run directories.
    """
    from .reduce import combine_runs  # reduce imports this module

    return describe(combine_runs(list(paths)))
