"""Caption sentences for the figures of `analysis.figures`, and the `figures.md` gallery.

Each caption states what is drawn, from which records, with the sign convention of the
G-effect (Wang et al. 2025, Definition 1: e = <grad L, grad R>; an SGD step of size eta changes
R by about -eta * e) and the facts of the runs (methods, steps, probe sizes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes

from ._style import band_label, runs
from .records import Run

SIGN = ("an SGD step of size \u03b7 changes a risk R by about \u2212\u03b7\u00b7e, so unlearning wants "
        "e < 0 on the forget risk and e \u2265 0 on the retain risk")


def _and(items: list[str]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _methods(ds: xr.Dataset) -> str:
    if "run" not in ds.dims:
        return str(ds.attrs.get("method", "the run"))
    return _and([label for label, _ in runs(ds["run"])])


def _steps(ds: xr.Dataset) -> str:
    n = ds.sizes.get("step", 0)
    return f"{n} optimizer step{'s' if n != 1 else ''}"


def _probes(ds: xr.Dataset) -> str:
    if "n_probe_instances" not in ds:
        return "the probe instances"
    n = ds["n_probe_instances"]
    if "run" in n.dims:
        n = n.max("run")
    return f"the probe instances ({int(n.sel(probe='forget'))} forget, {int(n.sel(probe='retain'))} retain)"


def geffect_curves(combined: xr.Dataset, axes) -> str:
    text = (f"Unlearning (left) and retaining (right) G-effect e = \u27e8\u2207L, \u2207R\u27e9 of "
            f"{_methods(combined)} over {_steps(combined)}: the line is the median over "
            f"{_probes(combined)}, the band the inter-quartile range and the dotted line the mean "
            f"(the recorded G-effect); {SIGN}.")
    logs = [a for a in axes if a.get_yscale() == "symlog"]
    if logs:
        lin = _and([f"\u00b1{a.yaxis.get_transform().linthresh:.2g}" for a in logs])
        text += (" The methods' magnitudes differ by more than 10\u00d7, so the y axis is "
                 f"symmetric-log (linear within {lin}).")
    return text


def stability(combined: xr.Dataset) -> str:
    named = {"loss": "the objective L", "grad_norm": "the gradient norm before clipping (log scale)"}
    parts = [p for v, p in named.items() if v in combined]
    if "probe_risk" in combined:
        parts.append("the forget and retain risk (mean token NLL) on the fixed probe sets, "
                     "measured before each step's update, with the inter-quartile band over instances")
    return (f"Training stability of {_methods(combined)} over {_steps(combined)}: {_and(parts)}. "
            "The per-step batch NLL is not shown: its batch changes every step.")


def _tied(g: xr.Dataset) -> bool:
    return "component" in g.coords and "lm_head" not in set(g["component"].values.astype(str))


def bands(run: Run) -> str:
    g = run.geffect
    names = [band_label(g, str(b)) for b in dict.fromkeys(g["band"].values.astype(str))]
    text = (f"Unlearning (left) and retaining (right) G-effect of {run.label} over {_steps(g)} per "
            f"layer band ({_and(names)}) and in total (black); the bands sum to the total; {SIGN}.")
    if _tied(g):
        text += (" The LM head is tied to the embedding: its gradient is in the embedding band, "
                 "and the band outside the blocks holds only the final norm.")
    return text


def heatmap(run: Run) -> str:
    return (f"G-effect of {run.label} per transformer block and optimizer step, unlearning (left) "
            "and retaining (right), on a colour scale symmetric about 0 (blue: e < 0, red: e > 0); "
            "groups outside the blocks (embedding, final norm, LM head) are left out.")


def pointwise(run: Run, ax: Axes, weight: str | None) -> str:
    ids = [t.get_text() for t in ax.texts]
    colour = f"coloured by {weight}" if weight else "coloured by step"
    text = (f"Point-wise G-effects of {run.label}: one point per objective instance and step "
            f"(x: on the forget risk, y: on the retain risk), {colour}; the points of a step sum "
            "to its G-effect.")
    if ids:
        text += f" Outliers (robust distance > 3.5 MADs) are labelled by instance_id: {_and(ids)}."
    else:
        text += (" No point is labelled: none is farther than 3.5 MADs from the median, or there "
                 "are fewer than 8 points.")
    return text


def instances(run: Run) -> str:
    g = run.geffect
    n = {p: int((g["split"] == p).sum()) for p in ("forget", "retain")}
    return (f"G-effect of {run.label} on each fixed probe instance ({n['forget']} forget, "
            f"{n['retain']} retain), summed over layers and over {_steps(g)}, sorted from most "
            "negative (risk raised most) to most positive; a steep start means a few instances "
            "carry most of the G-effect.")


def divergence(run: Run) -> str:
    return (f"Cosine (left) and norm ratio (right) between the GA gradient \u2212g_f and the SGA "
            f"gradient of {run.label} per layer band over {_steps(run.geffect)}, from the Gram "
            "matrices recorded at every step; a cosine and ratio of 1 would mean SGA is GA.")


def first_order(run: Run) -> str:
    opt = str(run.config.get("optimizer", "") or "unknown")
    note = "" if opt.lower() == "sgd" else f"; with {opt}, not SGD, exact agreement is not expected"
    return (f"Measured change of the forget and retain probe risk over one step against the "
            f"G-effect's prediction \u2212\u03b7\u00b7e for {run.label}: points on the dotted "
            f"identity line agree to first order{note}.")


def study(sweep: xr.Dataset, metrics: list[str], best: float | None) -> str:
    rates = np.unique(sweep.smoothing_rate.values[np.isfinite(sweep.smoothing_rate.values)])
    text = (f"Smoothing-rate study over r \u2208 {{{', '.join(f'{r:+g}' for r in rates)}}} "
            f"(r = 0 is GA): the final {_and([m.replace('_', ' ') for m in metrics])} per SGA "
            "convention with the empirically best r starred and the recorded r* (dashed: mean, "
            "shaded: 10\u201390 %)")
    if "r_star" in sweep:
        text += "; right: the online r* of each run"
        text += f" against the empirically best r = {best:+g}" if best is not None else ""
    return text + "."


def gallery(entries: list[tuple[str, str, str]], run_dirs: list[Path], theory: bool) -> str:
    """Markdown: a heading, image and numbered caption per (png name, pdf name, caption)."""
    lines = ["# Figures", "",
             f"Written by `geffect figures` (`analysis.figures.write_figures`) from "
             f"{len(run_dirs)} run{'s' if len(run_dirs) != 1 else ''}: "
             + ", ".join(f"`{p}`" for p in run_dirs) + ". Each figure is a PDF (vector) and a "
             "PNG (300 dpi).", ""]
    for i, (png, pdf, caption) in enumerate(entries, 1):
        lines += [f"## {Path(png).stem}", "", f"![{Path(png).stem}]({png})", "",
                  f"**Figure {i}.** {caption} ([PDF]({pdf}))", ""]
    if theory:
        lines += [("The smoothing-rate verdict and the first-order checks, in numbers: "
                   "[theory.txt](theory.txt)."), ""]
    return "\n".join(lines)
