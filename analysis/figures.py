"""The paper figures of one or more run directories: PDF + PNG (300 dpi) and a `figures.md`.

`geffect figures RUN_DIR... --out DIR` calls `write_figures`. Figures (each as .pdf and .png):

    geffect_curves        unlearning and retaining G-effect per method: median over the probe
                          instances, inter-quartile band, mean dotted; symmetric-log axis when
                          the methods' magnitudes differ by > 10x (Wang et al. 2025, Figs. 1-4)
    training_stability    objective, gradient norm, and the forget / retain risk on the fixed
                          probe sets (never the per-step batch NLL), every run
    <run>_geffect_bands   unlearning and retaining G-effect per layer band, with the total
    <run>_layer_heatmap   per-block G-effect, layer x step, unlearning and retaining
    <run>_pointwise       point-wise G-effects of the objective instances, outliers labelled
    <run>_instances       G-effect on each probe instance, accumulated over steps, sorted
    <run>_divergence      GA-vs-SGA gradient cosine and norm ratio per band (SGA runs)
    <run>_first_order     measured vs predicted change of the probe risks
    smoothing_rate        the smoothing-rate study (two or more SGA runs; GA joins as r = 0)
    theory.txt            the smoothing-rate verdict and each run's first-order check
    figures.md            the gallery: every figure with a caption sentence
    figures.json          the runs read and the files written

Builders return `Made(name, figure, caption)` without saving, so tests can read what was
drawn; figures are `matplotlib.figure.Figure` objects (no pyplot state, any backend) in the
paper style of `analysis.style`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

import xarray as xr
from matplotlib.figure import Figure

from . import captions, plots, reduce, style, theory
from .records import Run, expand_run_dirs, load_run


@dataclass
class Made:
    """One figure, not yet saved: its file stem, the figure and its caption sentence."""

    name: str
    figure: Figure
    caption: str


def _pair(width: str = "two", row_height: float = 2.5):
    return style.figure(width, 1, 2, row_height=row_height)


def comparison_figures(combined: xr.Dataset) -> Iterator[Made]:
    """Figures that compare runs: G-effect curves per method and training stability."""
    if "geffect_quantile" in combined:
        fig, ax = _pair()
        for i, probe in enumerate(reduce.PROBES):
            plots.plot_geffect_spread(combined, ax[0, i], probe=probe)
        style.figure_legend(fig)
        yield Made("geffect_curves", fig, captions.geffect_curves(combined, ax[0]))
    panels = [("loss", None), ("grad_norm", None)] + [("probe_risk", p) for p in reduce.PROBES]
    panels = [(v, p) for v, p in panels if v in combined]
    if panels:
        fig, ax = style.figure("two", 2, 2, row_height=2.2)
        for a, (var, probe) in zip(ax.ravel(), panels):
            if var == "probe_risk":
                plots.plot_risk(combined, a, probe=probe)
            else:
                plots.plot_training(combined, a, var=var)
                a.set_title({"loss": "Objective", "grad_norm": "Gradient norm"}[var])
        for a in ax.ravel()[len(panels):]:
            a.set_visible(False)
        style.figure_legend(fig)
        yield Made("training_stability", fig, captions.stability(combined))


def _weight_var(ds: xr.Dataset) -> str | None:
    """A (step, sample) variable with 'weight' in its name (e.g. NPO's instance weight)."""
    return next((v for v in ds.data_vars if "weight" in v and set(ds[v].dims) == {"step", "sample"}), None)


def _consecutive(g: xr.Dataset) -> bool:
    steps = set(g["step"].values.tolist())
    return "risk" in g and any(s + 1 in steps for s in steps)


def run_figures(run: Run) -> Iterator[Made]:
    """The per-run figures a G-effect record supports."""
    g, name = run.geffect, run.name
    if g is None:
        return
    fig, ax = _pair()
    for i, probe in enumerate(reduce.PROBES):
        plots.plot_geffect(g, ax[0, i], probe=probe, by="band")
        total = reduce.total(g["geffect"]).sel(probe=probe)
        ax[0, i].plot(total["step"].values, total.values, color="k", lw=2, label="total", zorder=1)
    fig.suptitle(run.label)
    style.figure_legend(fig)
    yield Made(f"{name}_geffect_bands", fig, captions.bands(run))
    fig, ax = _pair()
    for i, probe in enumerate(reduce.PROBES):
        plots.plot_layer_heatmap(g, ax[0, i], probe=probe)
    fig.suptitle(run.label)
    yield Made(f"{name}_layer_heatmap", fig, captions.heatmap(run))
    if "geffect_pointwise" in g and bool(g["geffect_pointwise"].notnull().any()):
        fig, ax = style.figure("one", row_height=2.8)
        weight = _weight_var(g)
        plots.plot_pointwise(g, ax[0, 0], color=weight)
        ax[0, 0].set_title(f"{run.label}: point-wise G-effects")
        yield Made(f"{name}_pointwise", fig, captions.pointwise(run, ax[0, 0], weight))
    if "geffect_instance" in g:
        fig, ax = style.figure("one", row_height=2.6)
        plots.plot_instance_geffects(g, ax[0, 0])
        ax[0, 0].set_title(f"{run.label}: G-effect per probe instance")
        yield Made(f"{name}_instances", fig, captions.instances(run))
    if "cosine_ga_sga" in g:
        fig, ax = _pair()
        plots.plot_divergence(g, ax[0, 0], quantity="cosine")
        plots.plot_divergence(g, ax[0, 1], quantity="norm_ratio")
        fig.suptitle(run.label)
        style.figure_legend(fig)
        yield Made(f"{name}_divergence", fig, captions.divergence(run))
    if _consecutive(g):
        fig, ax = style.figure("one", row_height=2.8)
        plots.plot_first_order(theory.first_order(g, run.train), ax[0, 0])
        ax[0, 0].set_title(f"{run.label}: first-order check")
        yield Made(f"{name}_first_order", fig, captions.first_order(run))


def study_figures(combined: xr.Dataset) -> tuple[list[Made], str]:
    """The smoothing-rate figure and the verdict text (two or more SGA runs with an r)."""
    rated = combined.smoothing_rate.notnull()
    if int(((combined.method == "sga") & rated).sum()) < 2:     # a sweep: two SGA rates at least
        return [], ""
    sweep = combined.sel(run=rated)
    report = theory.check(sweep)
    metrics = [m for m in ("model_utility", "nll_forget") if m in report.metrics]
    ncols = len(metrics) + ("r_star" in sweep)
    if ncols == 0:
        return [], report.text
    fig, ax = style.figure("two", 1, ncols, row_height=2.6)
    for a, m in zip(ax.ravel(), metrics):
        plots.plot_smoothing_study(sweep, a, metric=m)
    best = None
    if "r_star" in sweep:
        key = "model_utility" if "model_utility" in report.metrics else "nll_forget"
        best = next((r for (conv, m), r in report.best.items() if m == key), None)
        plots.plot_r_star(sweep, ax[0, -1], best_r=best)
    style.figure_legend(fig)
    return [Made("smoothing_rate", fig, captions.study(sweep, metrics, best))], report.text


def first_order_texts(runs: list[Run]) -> str:
    """The first-order check of every run with G-effects at consecutive steps."""
    parts = []
    for run in runs:
        g = run.geffect
        if g is None or not _consecutive(g):
            continue
        text = theory.first_order_text(theory.first_order(g, run.train),
                                       optimizer=str(run.config.get("optimizer", "")),
                                       clipped=bool(run.config.get("max_grad_norm")))
        parts.append(f"[{run.name}: {run.label}] {text}")
    return "\n\n".join(parts)


def write_figures(run_dirs: list[Path], out: Path) -> list[Path]:
    """Write every figure the runs' records support into `out`, with the `figures.md` gallery;
    returns the files written (figures, theory.txt, figures.md; figures.json lists them).

    Args:
        run_dirs: run directories, or sweep directories whose subdirectories are runs.
        out: the folder to write into (created if missing).
    """
    paths = expand_run_dirs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    gallery: list[tuple[str, str, str]] = []
    with style.paper():
        combined = reduce.combine_runs(paths)
        runs = [load_run(p) for p in paths]
        study, verdict = study_figures(combined)
        made = [comparison_figures(combined)] + [run_figures(r) for r in runs] + [iter(study)]
        for m in (m for gen in made for m in gen):
            pdf, png = style.save(m.figure, out, m.name)
            written += [pdf, png]
            gallery.append((png.name, pdf.name, m.caption))
    text = "\n\n".join(t for t in (verdict, first_order_texts(runs)) if t)
    if text:
        (out / "theory.txt").write_text(text + "\n")
        written.append(out / "theory.txt")
    (out / "figures.md").write_text(captions.gallery(gallery, paths, bool(text)))
    written.append(out / "figures.md")
    (out / "figures.json").write_text(json.dumps({"runs": [str(p) for p in paths],
                                                  "files": [p.name for p in written]}, indent=1))
    return written
