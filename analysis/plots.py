"""Axes-level plots of G-effect and training records: `plot_x(ds, ax=None, **kw) -> Axes`.

G-effect figures follow Wang et al. 2025 ("Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", Figs. 1-4): unlearning and retaining G-effects over steps, whole
model and per layer band. Values are plotted as recorded, e = <grad L, grad R>, so an SGD step
of size eta changes R by about -eta * e: a working unlearning objective shows e < 0 on the
forget risk and e >= 0 on the retain risk. The GA-vs-SGA divergence (cosine, norm ratio)
concerns Smoothed Gradient Ascent (arXiv:2510.22376).

Every function accepts a single run's record or a record combined along `run`
(`analysis.reduce.combine_runs`), where it draws one line per run. None of them modifies its
input or writes files; figure composition and saving live in `analysis.figures`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes

from . import reduce, style
from ._style import PROBE_TITLE, STEP, band_label, finish, geffect_label, get_ax, styled_runs
from .curves import plot_geffect_spread, plot_risk
from .style import finite
from .pointwise import plot_instance_geffects, plot_pointwise
from .study_plots import plot_first_order, plot_r_star, plot_smoothing_study

__all__ = ["plot_geffect", "plot_geffect_spread", "plot_risk", "plot_layer_heatmap",
           "plot_pointwise", "plot_instance_geffects", "plot_divergence", "plot_training", "plot_loss_terms",
           "plot_smoothing_study", "plot_r_star", "plot_first_order"]

TRAIN_LABELS = {
    "loss": "objective L (nat)",
    "grad_norm": "\u2016\u2207L\u2016\u2082 (before clipping)",
    "nll_forget": "forget NLL (nat / token)\nof each step's batch",
    "nll_retain": "retain NLL (nat / token)\nof each step's batch",
    "lr": "learning rate \u03b7",
    "objective_loss": "objective L (nat)",
}


def _line_style(key: str, by: str | None, st: dict | None) -> dict:
    if st is not None:
        return st
    if by == "band":
        return {"color": style.BAND_COLORS.get(key), "ls": style.BAND_STYLES.get(key, "-")}
    return {}


def _geffect_lines(ds: xr.Dataset, probe: str, by: str | None) -> list[tuple[str, xr.DataArray, dict]]:
    """(label, (step,) G-effect line, style) per run, or per band / component / layer."""
    if by is None:
        src = ds["geffect_total"] if "geffect_total" in ds else reduce.total(ds["geffect"])
        if "run" not in ds.dims:
            src = src.assign_attrs(method=ds.attrs.get("method", ""))
        lines = [(label, one.sel(probe=probe), st) for label, one, st in styled_runs(src)]
        return lines if "run" in ds.dims else [("total", lines[0][1], lines[0][2])]
    if "run" in ds.dims:
        raise ValueError(f"by={by!r} needs a single run; select one with ds.sel(run=...) "
                         f"(found {ds.sizes['run']} runs)")
    split = reduce.by(ds["geffect"].sel(probe=probe), by)         # (step, by)
    label = (lambda k: band_label(ds, k)) if by == "band" else str
    return [(label(str(k)), split.sel({by: k}), _line_style(str(k), by, None)) for k in split[by].values]


def plot_geffect(ds: xr.Dataset, ax: Axes | None = None, *, probe: str = "forget",
                 by: str | None = None, cumulative: bool = False, **kw) -> Axes:
    """G-effect over steps: whole model (one line per run), or per band / component / layer.

    Band lines carry honest labels (`_style.band_label`: the final norm alone for a model whose
    LM head is tied to the embedding) and one colour per band in every figure.

    Args:
        ds: a G-effect record, or runs combined along `run`.
        probe: "forget" (the unlearning G-effect) or "retain" (the retaining G-effect).
        by: None for the whole-model sum, or "band", "component", "layer" (single run only).
        cumulative: plot the running sum over recorded steps instead.
        **kw: passed to `Axes.plot`.
    """
    ax = get_ax(ax)
    for label, line, st in _geffect_lines(ds, probe, by):
        line = reduce.cumulative(line) if cumulative else line
        ax.plot(*finite(line["step"].values, line.values), label=label, **{**st, **kw})
    return finish(ax, STEP, geffect_label(probe, cumulative), PROBE_TITLE.get(probe, probe))


def plot_layer_heatmap(ds: xr.Dataset, ax: Axes | None = None, *, probe: str = "forget",
                       cmap: str = "RdBu_r", **kw) -> Axes:
    """Per-block G-effect as a (layer x step) heatmap, colour scale symmetric about 0.

    Groups outside the transformer blocks (embeddings, final norm, lm head; layer -1) are left
    out. **kw goes to `Axes.pcolormesh`.
    """
    ax = get_ax(ax)
    e = reduce.by_layer(ds["geffect"].sel(probe=probe), blocks_only=True)  # (step, layer)
    e = e.transpose("layer", "step")
    vmax = float(np.nanmax(np.abs(e.values))) or 1.0
    mesh = ax.pcolormesh(e["step"].values, e["layer"].values, e.values, cmap=cmap,
                         vmin=-vmax, vmax=vmax, shading="nearest", **kw)
    ax.figure.colorbar(mesh, ax=ax, label=geffect_label(probe))
    layers = e["layer"].values
    ax.set_yticks(layers[::max(1, -(-len(layers) // 12))])         # at most ~12 labels
    return finish(ax, STEP, "transformer block (layer)", PROBE_TITLE.get(probe, probe), zero=False)


DIVERGENCE_LABELS = {"cosine": "cos(\u2207L_GA, \u2207L_SGA)",
                     "norm_ratio": "\u2016\u2207L_SGA\u2016 / \u2016\u2207L_GA\u2016"}


def plot_divergence(ds: xr.Dataset, ax: Axes | None = None, *, quantity: str = "cosine",
                    by: str | None = "band", **kw) -> Axes:
    """GA-vs-SGA gradient cosine or norm ratio over steps, per band (or whole model).

    The per-band value is that of the band's concatenated gradients (computed exactly from the
    per-group records, `analysis.reduce.divergence`), not an average of group values.

    Args:
        quantity: "cosine" or "norm_ratio".
        by: "band", "component", "layer", or None for the whole model.
    """
    if quantity not in DIVERGENCE_LABELS:
        raise ValueError(f"quantity must be one of {sorted(DIVERGENCE_LABELS)}, got {quantity!r}")
    ax = get_ax(ax)
    for label, one, st in styled_runs(ds):
        div = reduce.divergence(one, by)[quantity]                  # (step[, by])
        if by is None:
            ax.plot(*finite(div["step"].values, div.values), label=label, **{**st, **kw})
        else:
            for k in div[by].values:
                name = band_label(one, str(k)) if by == "band" else str(k)
                ax.plot(*finite(div["step"].values, div.sel({by: k}).values), label=name,
                        **{**_line_style(str(k), by, None), **kw})
    ref = 1.0
    ax.axhline(ref, color="0.6", lw=0.8, ls=":", zorder=0)
    return finish(ax, STEP, DIVERGENCE_LABELS[quantity], f"GA vs SGA gradient, {quantity.replace('_', ' ')}",
                  zero=quantity == "cosine")


def plot_training(ds: xr.Dataset, ax: Axes | None = None, *, var: str = "loss",
                  **kw) -> Axes:
    """A training-record quantity over steps, one line per run.

    `nll_forget` / `nll_retain` are the NLL of each step's *batch*, a different batch every
    step; read stability on the fixed probe sets instead (`plot_risk`).

    Args:
        var: "loss", "grad_norm", "nll_forget", "nll_retain" or "lr".
    """
    if var not in ds:
        raise ValueError(f"variable {var!r} not in the record; found {list(ds.data_vars)}")
    ax = get_ax(ax)
    for label, one, st in styled_runs(ds[var].assign_attrs(method=ds.attrs.get("method", ""))):
        # NaN between monitoring steps: join the rest
        ax.plot(*finite(one["step"].values, one.values), label=label, **{**st, **kw})
    if var == "grad_norm":
        ax.set_yscale("log")
    return finish(ax, STEP, TRAIN_LABELS.get(var, var), None, zero=var == "loss")


def plot_loss_terms(ds: xr.Dataset, ax: Axes | None = None, **kw) -> Axes:
    """Each named loss term of one run over steps (e.g. SGA's forget and normal NLL)."""
    if "run" in ds.dims:
        raise ValueError(f"plot_loss_terms needs a single run; found {ds.sizes['run']} runs")
    ax = get_ax(ax)
    for term in ds["term"].values:
        line = ds["loss_term"].sel(term=term)
        ax.plot(line["step"].values, line.values, label=str(term), **kw)
    return finish(ax, STEP, "loss term (nat)", "Loss terms", zero=False)


def close(ax: Axes) -> None:
    """Close the figure an axes belongs to (for loops that make many figures)."""
    plt.close(ax.figure)
