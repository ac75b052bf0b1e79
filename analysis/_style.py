"""Shared plot plumbing: axes creation, run iteration, labels with units and sign convention."""
from __future__ import annotations

import math
from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes

from . import style

SIGN_NOTE = "SGD step: \u0394R \u2248 \u2212\u03b7\u00b7e"
PROBE_TITLE = {"forget": "Unlearning G-effect (R = forget risk)",
               "retain": "Retaining G-effect (R = retain risk)"}
PROBE_SYMBOL = {"forget": "R_f", "retain": "R_r"}
STEP = "optimizer step"
UNIT = "nat\u00b2"                        # <dL/dθ, dR/dθ>: nat x nat, parameters are unitless
RISK_UNIT = "nat / token"


def get_ax(ax: Axes | None) -> Axes:
    """The given axes, or a fresh pyplot one (so Jupyter shows it) of screen size."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2), constrained_layout=True)
    return ax


def geffect_label(probe: str, cumulative: bool = False, scale: str = "") -> str:
    """Axis label of a G-effect: the inner product, its unit and sign convention (no learning
    rate in e; an SGD step of size eta changes R by about -eta * e)."""
    sym = PROBE_SYMBOL.get(probe, f"R_{probe}")
    core = f"e = \u27e8\u2207L, \u2207{sym}\u27e9"
    head = f"cumulative \u03a3 {core}" if cumulative else core if scale else f"G-effect {core}"
    return f"{head} ({UNIT}{', ' + scale if scale else ''})\n{SIGN_NOTE}"


def band_label(ds: xr.Dataset | xr.DataArray, band: str) -> str:
    """An honest legend label for a layer band: what its groups hold.

    `lm` holds the groups outside the blocks other than the embedding: for a model whose LM
    head is tied to the embedding (no `lm_head` group) that is only the final norm, and the
    tied matrix sits in `embed`. Block bands name their layers.
    """
    if "band" not in ds.coords:
        return band
    sel = ds["band"].values.astype(str) == band
    comps = set(ds["component"].values[sel].astype(str)) if "component" in ds.coords else set()
    tied = "component" in ds.coords and "lm_head" not in set(ds["component"].values.astype(str))
    if band == "embed":
        return "embedding (tied LM head)" if tied else "embedding"
    if band == "lm":
        names = [n for c, n in (("norm", "final norm"), ("lm_head", "LM head")) if c in comps]
        names += sorted(comps - {"norm", "lm_head"})
        return " + ".join(names) or "lm"
    if "layer" in ds.coords:
        layers = ds["layer"].values[sel]
        if layers.size:
            lo, hi = int(layers.min()), int(layers.max())
            return f"{band} (layer{'s' if hi > lo else ''} {lo}\u2013{hi})" if hi > lo else f"{band} (layer {lo})"
    return band


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
    for label, one, _ in styled_runs(ds):
        yield label, one


def styled_runs(ds: xr.Dataset | xr.DataArray) -> Iterator[tuple[str, xr.Dataset | xr.DataArray, dict]]:
    """(label, one run, style) with the run's fixed colour (`style.run_styles`)."""
    styles = style.run_styles(ds)
    if "run" not in ds.dims:
        yield run_label(ds), ds, styles[""]
        return
    order = np.arange(ds.sizes["run"])
    if "smoothing_rate" in ds.coords:
        order = sorted(order, key=lambda i: (str(ds.method.values[i]) if "method" in ds.coords else "",
                                             np.nan_to_num(ds.smoothing_rate.values[i], nan=-9)))
    for i in order:
        one = ds.isel(run=int(i))
        yield run_label(one) or str(one.run.item()), one, styles[str(one.run.item())]


def finish(ax: Axes, xlabel: str, ylabel: str, title: str | None = None, zero: bool = True,
           legend: bool = True) -> Axes:
    """Zero line, labels, integer ticks on a step axis, legend outside the data."""
    if zero:
        ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlabel == STEP:
        style.step_axis(ax)
    if title:
        ax.set_title(title)
    if legend:
        style.legend_outside(ax)
    return ax
