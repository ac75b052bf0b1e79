"""Axes-level plots of the smoothing-rate study and the first-order check.

The smoothing rate r of Smoothed Gradient Ascent (SGA, arXiv:2510.22376) weighs each forget
sample against K-1 normal samples; the paper derives an optimal r*, recorded online by the
engine. These plots put a sweep's final metrics against r (both signs) with the empirical best,
and the r* trajectory against it. `plot_first_order` shows the measured change of the probe
risk against the G-effect's prediction -eta * e (Wang et al. 2025, Eq. 3).
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes

from . import reduce, style, theory
from ._style import STEP, finish, get_ax, styled_runs

METRIC_LABELS = {"model_utility": "model utility (final)", "nll_forget": "forget NLL (nat / token, final)",
                 "nll_retain": "retain NLL (nat / token, final)", "forget_quality": "forget quality (final)",
                 "forget_Q_A_Prob": "forget Q-A probability (final)",
                 "forget_Q_A_ROUGE": "forget Q-A ROUGE-L (final)",
                 "forget_truth_ratio": "forget truth ratio (final)"}


def plot_smoothing_study(sweep: xr.Dataset, ax: Axes | None = None, *, metric: str = "model_utility",
                         tradeoff: theory.Tradeoff | None = None, show_r_star: bool = True,
                         **kw) -> Axes:
    """Final `metric` against the smoothing rate r, one line per sign convention.

    The empirically best r is starred: by `tradeoff` when given (infeasible runs drawn hollow),
    else by the metric's own direction (`theory.DIRECTIONS`). The recorded r* is drawn as its
    mean (dashed) and 10-90 % band over all steps of the convention's runs.

    Args:
        sweep: runs combined along `run` with `smoothing_rate` and `convention` coordinates.
        metric: a final metric of `reduce.final_metrics` (summary metric, nll_forget, nll_retain).
    """
    ax = get_ax(ax)
    metrics = reduce.final_metrics(sweep)
    if metric not in metrics:
        raise ValueError(f"metric {metric!r} not in the sweep; found {list(metrics.data_vars)}")
    convs = sorted({str(c) for c in metrics.convention.values if str(c)}) or [""]
    pick = tradeoff or theory.Tradeoff(metric, theory.DIRECTIONS.get(metric, 1) > 0, None)
    for conv in convs:
        sel = ((metrics.convention == conv) | (metrics.method == "ga")) & metrics.smoothing_rate.notnull()
        sub = metrics.sel(run=sel).sortby("smoothing_rate")
        r, y = sub.smoothing_rate.values, sub[metric].values
        line, = ax.plot(r, y, marker="o", label=f"SGA {conv}".strip(), **{
            "color": style.shade(style.method_color("sga"), 0.35 if conv == "split" else 0.0),
            "ls": "--" if conv == "split" else "-", **kw})
        ok = pick.feasible(sub).values
        ax.scatter(r[~ok], y[~ok], facecolor="white", edgecolor=line.get_color(), zorder=3)
        best = pick.best(sub)
        if best is not None:
            ax.scatter([float(sub.smoothing_rate.sel(run=best))], [float(sub[metric].sel(run=best))],
                       marker="*", s=180, color=line.get_color(), edgecolor="k", zorder=4,
                       label=f"best r ({conv})" if conv else "best r")
        if show_r_star and "r_star" in sweep:
            pooled = theory.pooled_r_star(sweep, conv or None)
            if pooled["n"]:
                ax.axvline(pooled["mean"], color=line.get_color(), ls="--", lw=1,
                           label=f"recorded r* mean ({conv})" if conv else "recorded r* mean")
                ax.axvspan(pooled["q10"], pooled["q90"], color=line.get_color(), alpha=0.12)
    title = f"Smoothing-rate study: {pick.describe()}" if tradeoff else "Smoothing-rate study"
    return finish(ax, "smoothing rate r (r = 0 is GA)", METRIC_LABELS.get(metric, metric),
                  title, zero=False)


def plot_r_star(sweep: xr.Dataset, ax: Axes | None = None, *, best_r: float | None = None,
                **kw) -> Axes:
    """The online r* over steps, one line per SGA run, against the empirically best r."""
    if "r_star" not in sweep:
        raise ValueError(f"no r_star in the record (SGA runs record it); found {list(sweep.data_vars)}")
    ax = get_ax(ax)
    for label, one, st in styled_runs(sweep["r_star"]):
        if bool(one.notnull().any()):
            ax.plot(one["step"].values, one.values, label=label, **{**st, **kw})
    if best_r is not None:
        ax.axhline(best_r, color="k", ls="--", lw=1.2, label=f"empirical best r = {best_r:+g}")
    return finish(ax, STEP, "derived optimal smoothing rate r*", "Online r* vs empirical best",
                  zero=False)


def plot_first_order(fo: xr.Dataset, ax: Axes | None = None, *, probe: str | None = None, **kw) -> Axes:
    """Measured R(t+1) - R(t) against the prediction -eta * e(t), with the identity line.

    Args:
        fo: the output of `theory.first_order`.
        probe: one probe, or None for both.
    """
    ax = get_ax(ax)
    probes = [probe] if probe else [str(p) for p in fo["probe"].values]
    lims = []
    for p in probes:
        x, y = fo.predicted.sel(probe=p).values, fo.measured.sel(probe=p).values
        ax.scatter(x, y, s=kw.pop("s", 16), label=p, **kw)
        lims += [np.nanmin([x, y]), np.nanmax([x, y])]
    lo, hi = min(lims), max(lims)
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls=":", label="measured = predicted")
    return finish(ax, "predicted \u0394R = \u2212\u03b7\u00b7\u03a3 e (nat)", "measured \u0394R (nat)",
                  "First-order check of the G-effect", zero=False)
