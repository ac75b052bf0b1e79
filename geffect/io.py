"""Atomic write, append-along-step and open of records (netCDF4).

A write goes to `<path>.tmp` and is moved over `path` with `os.replace`, which is atomic on
POSIX: a crash mid-write leaves the previous complete file readable. `append_record` rewrites
the whole file (old steps + new step) the same way; records are small (a few MB for long runs),
so the quadratic I/O is cheaper than the complexity of shards.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from .schema import SchemaError, validate

ENGINE = "netcdf4"


def _kind(ds: xr.Dataset, kind: str | None) -> str:
    if kind is not None:
        return kind
    if "geffect" in ds.data_vars:
        return "geffect"
    return "eval" if "summary" in ds.data_vars else "train"


def _strings_filled(ds: xr.Dataset) -> xr.Dataset:
    """Replace missing entries of string variables (padding after an outer join) by ""."""
    for name, var in ds.variables.items():
        if var.dtype.kind == "O":
            vals = np.array([("" if (v is None or (isinstance(v, float) and np.isnan(v)))
                              else v) for v in var.values.ravel()], dtype=object)
            ds[name] = (var.dims, vals.reshape(var.shape), var.attrs)
    return ds


def write_record(ds: xr.Dataset, path: str | os.PathLike, kind: str | None = None) -> Path:
    """Validate `ds` and write it atomically to `path` (netCDF4). Returns the path."""
    path = Path(path)
    validate(ds, _kind(ds, kind))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        ds.to_netcdf(tmp, engine=ENGINE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def open_record(path: str | os.PathLike, kind: str | None = None) -> xr.Dataset:
    """Open, load into memory (the file is closed on return) and validate a record."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no record at {path}")
    with xr.open_dataset(path, engine=ENGINE) as ds:
        ds = ds.load()
    return validate(ds, _kind(ds, kind))


def append_record(ds_step: xr.Dataset, path: str | os.PathLike, kind: str | None = None) -> Path:
    """Append new step(s) to the record at `path` (creating it), atomically.

    The `sample` dim may differ in length between steps; shorter steps are padded with NaN
    and `sample_id = ""`. The first record's attrs are kept.
    """
    path = Path(path)
    kind = _kind(ds_step, kind)
    if not path.exists():
        return write_record(ds_step, path, kind)
    old = open_record(path, kind)
    dup = sorted(set(old["step"].values.tolist()) & set(ds_step["step"].values.tolist()))
    if dup:
        raise SchemaError(f"append_record: steps {dup} are already in {path}; expected new steps")
    new = xr.concat([old, ds_step], dim="step", data_vars="minimal", coords="minimal",
                    join="outer", combine_attrs="override", compat="override")
    return write_record(_strings_filled(new), path, kind)
