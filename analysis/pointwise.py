"""Point-wise G-effects: which objective instances drive the update, and how heavy the tail is.

The point-wise G-effect of objective instance s (Wang et al. 2025, Sec. 4, "PG-effect") is
<grad L(s), grad R_probe>, where grad L(s) is the part of the step's gradient that flows through
s's rows (geffect/SCHEMA.md, `geffect_pointwise`; it sums over instances to the G-effect).
One point per (step, instance): x = unlearning, y = retaining point-wise G-effect, coloured by
step. Outliers are the points whose robust distance from the median (median absolute
deviation, scaled by 1.4826 to match a normal's standard deviation; Rousseeuw & Croux 1993)
exceeds `z`, among at least 8 points; they are labelled with their `sample_id` (the objective
instance's instance_id).
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from . import reduce, style
from ._style import STEP, UNIT, finish, get_ax

MAD_TO_SD = 1.4826
MIN_POINTS = 8        # fewer points: a median and MAD say too little to call one an outlier


def robust_z(values: np.ndarray) -> np.ndarray:
    """|v - median| / (1.4826 MAD) per column (NaN ignored; a column with no spread gives 0)."""
    v = np.asarray(values, float)                                   # (N, D)
    med = np.nanmedian(v, 0)                                        # (D,)
    scale = MAD_TO_SD * np.nanmedian(np.abs(v - med), 0)            # (D,)
    z = np.abs(v - med) / np.where(scale > 0, scale, np.inf)        # (N, D)
    return np.where(np.isnan(v), np.nan, z)


def outliers(x: np.ndarray, y: np.ndarray, z: float = 3.5, top: int = 3) -> np.ndarray:
    """Indices of at most `top` points whose robust distance sqrt(z_x^2 + z_y^2) exceeds `z`,
    farthest first; none among fewer than MIN_POINTS finite points."""
    if int((np.isfinite(x) & np.isfinite(y)).sum()) < MIN_POINTS:
        return np.array([], dtype=int)
    dist = np.sqrt(np.nansum(robust_z(np.stack([x, y], 1)) ** 2, 1))   # (N,)
    dist = np.where(np.isfinite(x) & np.isfinite(y), dist, -np.inf)
    order = np.argsort(-dist, kind="stable")[:top]
    return order[dist[order] > z]


def pointwise_table(ds: xr.Dataset, step: int | None = None,
                    color: str | None = None) -> dict[str, np.ndarray]:
    """Flat (step, sample) arrays: x (forget), y (retain), step, sample, label and, with
    `color`, that (step, sample) variable as c; padding (NaN or sample_id "") dropped."""
    pw = reduce.total(ds["geffect_pointwise"])                      # (step, sample, probe)
    if step is not None:
        pw = pw.sel(step=[step])
    pw = pw.transpose("step", "sample", "probe")
    shape = pw.shape[:2]                                            # (S, N)
    pick = lambda v: ds[v].sel(step=pw["step"]).transpose("step", "sample").values
    ids = pick("sample_id").astype(str) if "sample_id" in ds else np.full(shape, "")
    samples = np.broadcast_to(pw["sample"].values[None, :], shape)  # (S, N)
    out = {"x": pw.sel(probe="forget").values, "y": pw.sel(probe="retain").values,
           "step": np.broadcast_to(pw["step"].values[:, None], shape), "sample": samples,
           "label": np.where(ids != "", ids, np.char.add("sample ", samples.astype(str)))}
    if color is not None:
        out["c"] = pick(color)
    keep = np.isfinite(out["x"]) & np.isfinite(out["y"])
    if "sample_id" in ds:
        keep &= ids != ""
    return {k: np.asarray(v)[keep] for k, v in out.items()}


def plot_pointwise(ds: xr.Dataset, ax: Axes | None = None, *, step: int | None = None,
                   color: str | None = None, cmap: str = "viridis", label_outliers: int = 3,
                   z: float = 3.5, **kw) -> Axes:
    """Point-wise G-effects of the objective instances: unlearning (x) vs retaining (y).

    Args:
        step: one recorded step, or None for every step.
        color: a (step, sample) variable to colour by, e.g. a method's instance weight (NPO's
            weight); default: the step (integer colour-bar ticks).
        label_outliers: label at most this many outliers (robust distance > `z`) by sample_id.
    """
    if "run" in ds.dims:
        raise ValueError(f"plot_pointwise needs a single run's G-effect record; found {ds.sizes['run']} runs")
    ax = get_ax(ax)
    if color is not None and color not in ds:
        raise ValueError(f"color variable {color!r} not in the record; found {list(ds.data_vars)}")
    t = pointwise_table(ds, step, color)
    c, clabel = (t["step"], STEP) if color is None else (t["c"], color)
    pts = ax.scatter(t["x"], t["y"], c=c, cmap=cmap, s=kw.pop("s", 12), **kw)
    bar = ax.figure.colorbar(pts, ax=ax, label=clabel)
    if color is None:
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    for i in outliers(t["x"], t["y"], z, label_outliers) if label_outliers else []:
        ax.annotate(str(t["label"][i]), (t["x"][i], t["y"][i]), xytext=(3, 3),
                    textcoords="offset points", fontsize="x-small")
    ax.axvline(0.0, color="0.6", lw=0.8, zorder=0)
    return finish(ax, f"unlearning PG-effect \u27e8\u2207L(s), \u2207R_f\u27e9 ({UNIT})",
                  f"retaining PG-effect \u27e8\u2207L(s), \u2207R_r\u27e9 ({UNIT})",
                  "Point-wise G-effects (want x < 0, y \u2265 0)", legend=False)


def plot_instance_geffects(ds: xr.Dataset, ax: Axes | None = None, *, max_labels: int = 24,
                           **kw) -> Axes:
    """The G-effect on each probe instance, accumulated over the recorded steps, sorted.

    One bar per fixed probe instance i: sum over steps and groups of <grad L, grad R_i>
    (`reduce.instance_table`'s geffect_cum), coloured by probe, most negative first; bars are
    labelled by instance_id (up to `max_labels`). The spread of the bars is the tail: a few
    instances carrying most of the G-effect show as a steep start.
    """
    if "run" in ds.dims:
        raise ValueError(f"plot_instance_geffects needs a single run; found {ds.sizes['run']} runs")
    if "geffect_instance" not in ds:
        raise ValueError(f"needs 'geffect_instance' (per probe instance); found {list(ds.data_vars)}")
    ax = get_ax(ax)
    table = reduce.instance_table(ds)
    values = table["geffect_cum"].values                            # (I,)
    order = np.argsort(values, kind="stable")
    splits = table["split"].values.astype(str)[order]
    x = np.arange(order.size)
    for probe in dict.fromkeys(splits):
        sel = splits == probe
        ax.bar(x[sel], values[order][sel], color=style.PROBE_COLORS.get(probe, "0.5"),
               label=f"{probe} probe", **kw)
    ids = table["instance"].values.astype(str)[order]
    if order.size <= max_labels:
        ax.set_xticks(np.arange(order.size), ids, rotation=90, fontsize="x-small")
    else:
        ax.set_xticks([])
    return finish(ax, "probe instance (sorted)", f"\u03a3_t \u27e8\u2207L, \u2207R_i\u27e9 ({UNIT})",
                  "G-effect per probe instance, accumulated over steps")
