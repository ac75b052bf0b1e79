"""The paper figures of one or more run directories, written as PNG and PDF.

`geffect figures RUN_DIR... --out DIR` calls `write_figures`. Files (each as .png and .pdf):

    geffect_curves        unlearning and retaining G-effect over steps, one line per run
                          (Wang et al. 2025, Figs. 1-4: GA, WGA, NPO, TNPO, ... and SGA)
    training_stability    loss, gradient norm, forget and retain NLL over steps, every run
    <run>_geffect_bands   unlearning and retaining G-effect per layer band, with the total
    <run>_layer_heatmap   per-block G-effect, layer x step, unlearning and retaining
    <run>_pointwise       point-wise G-effects of the objective instances
    <run>_divergence      GA-vs-SGA gradient cosine and norm ratio per band (SGA runs)
    <run>_first_order     measured vs predicted change of the probe risks (G-effects at
                          consecutive steps)
    smoothing_rate        the smoothing-rate study: metrics vs r with the empirical best and the
                          recorded r*, and the r* trajectory (two or more SGA runs; GA runs
                          join as r = 0)
    theory.txt            the smoothing-rate verdict and each run's first-order check

Figures are built on `matplotlib.figure.Figure` directly (no pyplot state, any backend).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from . import plots, reduce, theory
from .records import Run, expand_run_dirs, load_run

FORMATS = ("png", "pdf")


def _save(fig: Figure, out: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out / f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', name)}.{fmt}"
        fig.savefig(path, dpi=150)
        paths.append(path)
    return paths


def _grid(nrows: int, ncols: int, w: float = 4.6, h: float = 3.4) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False))


def comparison_figures(combined: xr.Dataset, out: Path) -> list[Path]:
    written = []
    if "geffect_total" in combined:
        fig, ax = _grid(1, 2)
        for i, probe in enumerate(reduce.PROBES):
            plots.plot_geffect(combined, ax[0, i], probe=probe)
        written += _save(fig, out, "geffect_curves")
    train_vars = [v for v in ("loss", "grad_norm", "nll_forget", "nll_retain") if v in combined]
    if train_vars:
        fig, ax = _grid(2, 2)
        for a, var in zip(ax.ravel(), train_vars):
            plots.plot_training(combined, a, var=var)
        for a in ax.ravel()[len(train_vars):]:
            a.set_visible(False)
        fig.suptitle("Training stability")
        written += _save(fig, out, "training_stability")
    return written


def _weight_var(ds: xr.Dataset) -> str | None:
    """A (step, sample) variable with 'weight' in its name (e.g. NPO's instance weight)."""
    return next((v for v in ds.data_vars if "weight" in v and set(ds[v].dims) == {"step", "sample"}), None)


def run_figures(run: Run, out: Path) -> list[Path]:
    g, written, name = run.geffect, [], run.name
    if g is None:
        return written
    fig, ax = _grid(1, 2)
    for i, probe in enumerate(reduce.PROBES):
        plots.plot_geffect(g, ax[0, i], probe=probe, by="band")
        total = reduce.total(g["geffect"]).sel(probe=probe)
        ax[0, i].plot(total["step"].values, total.values, color="k", lw=2, label="total")
        ax[0, i].legend(fontsize="small", frameon=False)
    fig.suptitle(run.label)
    written += _save(fig, out, f"{name}_geffect_bands")
    fig, ax = _grid(1, 2)
    for i, probe in enumerate(reduce.PROBES):
        plots.plot_layer_heatmap(g, ax[0, i], probe=probe)
    fig.suptitle(run.label)
    written += _save(fig, out, f"{name}_layer_heatmap")
    if "geffect_pointwise" in g:
        fig, ax = _grid(1, 1)
        plots.plot_pointwise(g, ax[0, 0], color=_weight_var(g))
        written += _save(fig, out, f"{name}_pointwise")
    if "cosine_ga_sga" in g:
        fig, ax = _grid(1, 2)
        plots.plot_divergence(g, ax[0, 0], quantity="cosine")
        plots.plot_divergence(g, ax[0, 1], quantity="norm_ratio")
        fig.suptitle(run.label)
        written += _save(fig, out, f"{name}_divergence")
    steps = set(g["step"].values.tolist())
    if "risk" in g and any(s + 1 in steps for s in steps):
        fig, ax = _grid(1, 1)
        plots.plot_first_order(theory.first_order(g, run.train), ax[0, 0])
        written += _save(fig, out, f"{name}_first_order")
    return written


def study_figures(combined: xr.Dataset, out: Path) -> tuple[list[Path], str]:
    """The smoothing-rate figure and the verdict text (two or more runs with an r)."""
    rated = combined.smoothing_rate.notnull()
    if int(((combined.method == "sga") & rated).sum()) < 2:     # a sweep: two SGA rates at least
        return [], ""
    sweep = combined.sel(run=rated)
    report = theory.check(sweep)
    metrics = [m for m in ("model_utility", "nll_forget") if m in report.metrics]
    ncols = len(metrics) + ("r_star" in sweep)
    if ncols == 0:
        return [], report.text
    fig, ax = _grid(1, ncols)
    for a, m in zip(ax.ravel(), metrics):
        plots.plot_smoothing_study(sweep, a, metric=m)
    if "r_star" in sweep:
        key = "model_utility" if "model_utility" in report.metrics else "nll_forget"
        best = next((r for (conv, m), r in report.best.items() if m == key), None)
        plots.plot_r_star(sweep, ax[0, -1], best_r=best)
    return _save(fig, out, "smoothing_rate"), report.text


def first_order_texts(runs: list[Run]) -> str:
    """The first-order check of every run with G-effects at consecutive steps."""
    parts = []
    for run in runs:
        g = run.geffect
        steps = set(g["step"].values.tolist()) if g is not None else set()
        if g is None or "risk" not in g or not any(s + 1 in steps for s in steps):
            continue
        text = theory.first_order_text(theory.first_order(g, run.train),
                                       optimizer=str(run.config.get("optimizer", "")),
                                       clipped=bool(run.config.get("max_grad_norm")))
        parts.append(f"[{run.name}: {run.label}] {text}")
    return "\n\n".join(parts)


def write_figures(run_dirs: list[Path], out: Path) -> list[Path]:
    """Write every figure the runs' records support into `out`; returns the files written.

    Args:
        run_dirs: run directories, or sweep directories whose subdirectories are runs.
        out: the folder to write into (created if missing).
    """
    paths = expand_run_dirs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    combined = reduce.combine_runs(paths)
    runs = [load_run(p) for p in paths]
    written = comparison_figures(combined, out)
    for run in runs:
        written += run_figures(run, out)
    study, verdict = study_figures(combined, out)
    written += study
    text = "\n\n".join(t for t in (verdict, first_order_texts(runs)) if t)
    if text:
        (out / "theory.txt").write_text(text + "\n")
        written.append(out / "theory.txt")
    (out / "figures.json").write_text(json.dumps({"runs": [str(p) for p in paths],
                                                  "files": [p.name for p in written]}, indent=1))
    return written
