"""Per-method curves over steps with the spread over probe instances.

The records are per probe instance, so a method's G-effect at a step is a distribution over
instances, not one number: `plot_geffect_spread` draws its median and inter-quartile range
(and, dotted, the mean, which is the recorded G-effect `geffect`; geffect/SCHEMA.md). The
G-effect is Wang et al. 2025 ("Rethinking LLM Unlearning Objectives", Definition 1; Figs. 1-4
plot it per method over steps): e = <grad L, grad R>, so an SGD step of size eta changes R by
about -eta * e.

`plot_risk` draws the risk on the *fixed* probe sets (the same instances at every step,
measured before the step's update), which is what training stability must be read on; the
training record's `nll_forget` is the NLL of each step's batch, a different batch every step.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes

from . import reduce
from ._style import PROBE_TITLE, RISK_UNIT, STEP, finish, geffect_label, get_ax, styled_runs
from .style import finite

RATIO = 10.0          # magnitudes of the lines differ by more than this: symmetric-log axis
SCALES = ("auto", "linear", "symlog")
RISK_LABEL = {"forget": "forget probe risk R_f", "retain": "retain probe risk R_r"}


def _spread(ds: xr.Dataset, var: str, center: str) -> tuple[xr.DataArray, xr.DataArray]:
    """(quantiles (step, probe, quantile), center (step, probe)) of one run or all runs."""
    q, center = _spread_of(ds, var, center)
    for da in (q, center):
        if "run" not in da.dims:
            da.attrs["method"] = ds.attrs.get("method", "")
    return q, center


def _spread_of(ds: xr.Dataset, var: str, center: str) -> tuple[xr.DataArray, xr.DataArray]:
    if "run" in ds.dims:
        need = [f"{var}_quantile", center]
        missing = [v for v in need if v not in ds]
        if missing:
            raise ValueError(f"a combined record needs {missing} (analysis.reduce.combine_runs "
                             f"writes them); found {list(ds.data_vars)}")
        return ds[f"{var}_quantile"], ds[center]
    if var == "geffect":
        if "geffect_instance" not in ds:
            raise ValueError(f"the spread over instances needs 'geffect_instance'; found {list(ds.data_vars)}")
        return (reduce.probe_quantiles(reduce.total(ds["geffect_instance"])),   # (step, probe, q)
                reduce.total(ds["geffect"]))                                    # (step, probe)
    if "risk" not in ds:
        raise ValueError("the risk on the fixed probe sets needs 'risk' (geffect.nc) or "
                         "'probe_risk' (combine_runs); the training record's nll_forget is the "
                         f"NLL of each step's batch, not a fixed set. Found {list(ds.data_vars)}")
    return reduce.probe_quantiles(ds["risk"]), reduce.probe_risk(ds)


def symlog_threshold(magnitudes: list[float], ratio: float = RATIO) -> float | None:
    """The linear range of a symmetric-log axis when the largest line magnitude exceeds the
    smallest non-zero one by more than `ratio` (so the smallest line stays linear), else None;
    `ratio=0` always gives the smallest non-zero magnitude (a forced symlog axis)."""
    m = np.array([v for v in magnitudes if np.isfinite(v) and v > 0])
    if m.size == 0 or (ratio > 0 and (m.size < 2 or m.max() <= ratio * m.min())):
        return None
    return float(m.min())


def _draw(ax: Axes, q: xr.DataArray, center: xr.DataArray, probe: str, center_ls: str,
          band: bool, **kw) -> list[float]:
    mags = []
    for label, one_q, st in styled_runs(q):
        qq = one_q.sel(probe=probe)                                 # (step, quantile)
        steps = qq["step"].values
        steps, lo, med, hi = finite(steps, *(qq.sel(quantile=v).values for v in reduce.QUANTILES))
        if band:
            ax.fill_between(steps, lo, hi, color=st["color"], alpha=0.2, lw=0)
        ax.plot(steps, med, color=st["color"], ls=st["ls"], label=label, **kw)
        mags.append(float(np.nanmax(np.abs([lo, med, hi]))) if np.isfinite([lo, hi]).any() else np.nan)
    for _, one_c, st in styled_runs(center):
        c = one_c.sel(probe=probe)
        if center_ls:
            ax.plot(*finite(c["step"].values, c.values), color=st["color"], ls=center_ls, lw=0.9)
    return mags


def plot_geffect_spread(ds: xr.Dataset, ax: Axes | None = None, *, probe: str = "forget",
                        scale: str = "auto", mean: bool = True, **kw) -> Axes:
    """Per-method G-effect over steps: median over the probe's instances, IQR band, mean.

    Args:
        ds: one run's G-effect record, or runs combined along `run` (`combine_runs`).
        probe: "forget" (unlearning G-effect) or "retain" (retaining G-effect).
        scale: "linear", "symlog", or "auto": symmetric-log when the lines' magnitudes
            (largest |quartile| of each run) differ by more than 10x, linear within the smallest.
        mean: also draw the mean over instances (dotted), i.e. the recorded `geffect` total.
        **kw: passed to `Axes.plot` for the median lines.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    ax = get_ax(ax)
    q, center = _spread(ds, "geffect", "geffect_total")
    mags = _draw(ax, q, center, probe, ":" if mean else "", True, **kw)
    thresh = symlog_threshold(mags, RATIO if scale == "auto" else 0.0) if scale != "linear" else None
    if thresh is not None:
        ax.set_yscale("symlog", linthresh=thresh)
    label = geffect_label(probe, scale="symlog" if thresh else "")
    return finish(ax, STEP, label, PROBE_TITLE.get(probe, probe))


def plot_risk(ds: xr.Dataset, ax: Axes | None = None, *, probe: str = "forget",
              band: bool = True, **kw) -> Axes:
    """The probe risk R_probe (mean token NLL over the fixed probe instances) over steps.

    One line per run (R_probe = mean_i R_i, or the sum for `risk_reduction="sum"`), with the
    inter-quartile band of the instance risks R_i. Values are measured at each step's
    parameters, before its update.
    """
    ax = get_ax(ax)
    q, center = _spread(ds, "risk", "probe_risk")
    for label, one, st in styled_runs(center):
        c = one.sel(probe=probe)
        ax.plot(*finite(c["step"].values, c.values), color=st["color"], ls=st["ls"], label=label, **kw)
    if band:
        for _, one, st in styled_runs(q):
            qq = one.sel(probe=probe)
            ax.fill_between(*finite(qq["step"].values, qq.sel(quantile=0.25).values,
                                    qq.sel(quantile=0.75).values), color=st["color"], alpha=0.2, lw=0)
    ylabel = f"{RISK_LABEL.get(probe, probe)} ({RISK_UNIT})\nfixed probe set, before the update"
    return finish(ax, STEP, ylabel, f"{probe.capitalize()} risk on the fixed probe set", zero=False)
