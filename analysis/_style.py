"""Shared plot plumbing: axes creation, run iteration, labels with units and sign convention."""
from __future__ import annotations

import math
from typing import Iterator

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes

SIGN_NOTE = "as recorded; SGD step: \u0394R \u2248 \u2212\u03b7\u00b7e"
PROBE_TITLE = {"forget": "Unlearning G-effect (R = forget risk)",
               "retain": "Retaining G-effect (R = retain risk)"}
PROBE_SYMBOL = {"forget": "R_f", "retain": "R_r"}


def get_ax(ax: Axes | None) -> Axes:
    """The given axes, or a fresh paper-sized one."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2), constrained_layout=True)
    return ax


def geffect_label(probe: str, cumulative: bool = False) -> str:
    sym = PROBE_SYMBOL.get(probe, f"R_{probe}")
    core = f"\u27e8\u2207L, \u2207{sym}\u27e9"
    head = f"cumulative \u03a3 {core}" if cumulative else f"G-effect {core}"
    return f"{head}\n({SIGN_NOTE})"


def run_label(ds: xr.Dataset | xr.DataArray) -> str:
    """A legend label from the `method`, `smoothing_rate` and `convention` coordinates/attrs."""
    get = lambda k: (ds.coords[k].item() if k in ds.coords and ds.coords[k].ndim == 0
                     else ds.attrs.get(k))
    method = str(get("method") or get("run") or "")
    r = get("smoothing_rate")
    if method == "sga" and r is not None and not math.isnan(float(r)):
        conv = get("convention")
        return f"sga{' ' + str(conv) if conv else ''} r={float(r):+g}"
    return method


def runs(ds: xr.Dataset | xr.DataArray) -> Iterator[tuple[str, xr.Dataset | xr.DataArray]]:
    """(label, one run) for a combined record, or the single record itself."""
    if "run" not in ds.dims:
        yield run_label(ds), ds
        return
    order = np.arange(ds.sizes["run"])
    if "smoothing_rate" in ds.coords:
        order = sorted(order, key=lambda i: (str(ds.method.values[i]) if "method" in ds.coords else "",
                                             np.nan_to_num(ds.smoothing_rate.values[i], nan=-9)))
    for i in order:
        one = ds.isel(run=int(i))
        yield run_label(one) or str(one.run.item()), one


def finish(ax: Axes, xlabel: str, ylabel: str, title: str | None = None, zero: bool = True,
           legend: bool = True) -> Axes:
    if zero:
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize="medium")
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", frameon=False)
    return ax

