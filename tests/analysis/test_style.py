"""One style: integer step ticks, a fixed colour per method in every figure, paper sizes,
legends off the data, honest band labels, PDF + 300 dpi PNG."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from analysis import figures, plots, style, testing, theory
from analysis._style import band_label
from analysis.records import load_run


@pytest.fixture(scope="module")
def short():
    """Four steps: matplotlib's default locator would put ticks at 0.5, 1.5, ..."""
    return testing.geffect_run_record(seed=3, n_steps=4, method="sga", r=0.5)


STEP_PLOTS = {
    "geffect": lambda ds: plots.plot_geffect(ds),
    "bands": lambda ds: plots.plot_geffect(ds, by="band"),
    "spread": lambda ds: plots.plot_geffect_spread(ds),
    "risk": lambda ds: plots.plot_risk(ds),
    "heatmap": lambda ds: plots.plot_layer_heatmap(ds),
    "divergence": lambda ds: plots.plot_divergence(ds),
}


@pytest.mark.parametrize("name", sorted(STEP_PLOTS))
def test_step_ticks_are_integers(short, name):
    ax = STEP_PLOTS[name](short)
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(ticks) >= 2
    assert all(float(t).is_integer() for t in ticks), ticks


def test_pointwise_colour_bar_has_integer_steps(short):
    ax = plots.plot_pointwise(short)
    ax.figure.canvas.draw()
    bar = ax.collections[0].colorbar
    ticks = [t for t in bar.get_ticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


def _line_colors(fig: Figure) -> dict[str, str]:
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                out.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    return out


def test_method_colour_is_the_same_in_two_figures(methods_record):
    made = {m.name: m for m in figures.comparison_figures(methods_record)}
    curves, stability = _line_colors(made["geffect_curves"].figure), _line_colors(made["training_stability"].figure)
    want = {k: {style.METHOD_COLORS[m].lower()} for k, m in
            (("ga", "ga"), ("npo", "npo"), ("sga gls r=+0.5", "sga"))}
    assert curves == want
    assert stability == want


def test_stability_figure_reads_the_probe_risk(methods_record):
    made = {m.name: m for m in figures.comparison_figures(methods_record)}
    fig = made["training_stability"].figure
    labels = [a.get_ylabel() for a in fig.axes]
    assert not any("batch" in y for y in labels)
    risk_ax = next(a for a in fig.axes if a.get_ylabel().startswith("forget probe risk"))
    ga = next(l for l in risk_ax.get_lines() if l.get_label() == "ga")
    np.testing.assert_allclose(ga.get_ydata(), methods_record.probe_risk.sel(run="ga", probe="forget"))
    assert not np.allclose(ga.get_ydata(), methods_record.nll_forget.sel(run="ga"))
    assert "fixed probe sets" in made["training_stability"].caption


def test_shades_for_several_runs_of_one_method(sweep_record):
    styles = style.run_styles(sweep_record)
    colours = [styles[str(r)]["color"] for r in sweep_record.sortby("smoothing_rate").run.values]
    assert len(set(colours)) == len(colours)
    lightness = [sum(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colours]
    assert lightness == sorted(lightness)                          # dark (low r) to light
    assert style.method_color("npo") == style.METHOD_COLORS["npo"]
    assert style.method_color("mystery") == style.method_color("mystery")   # stable


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_legends_never_sit_on_data(method_dirs, methods_record):
    made = list(figures.comparison_figures(methods_record)) + list(figures.run_figures(load_run(method_dirs[-1])))
    assert {"geffect_curves", "training_stability", "sga_geffect_bands", "sga_divergence"} <= {m.name for m in made}
    for m in made:
        fig = m.figure
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        r = canvas.get_renderer()
        legends = list(fig.legends) + [a.get_legend() for a in fig.axes if a.get_legend()]
        for leg in legends:
            box = leg.get_window_extent(r)
            for ax in fig.axes:
                assert not _overlaps(box, ax.get_window_extent(r)), (m.name, ax.get_title())


def test_paper_sizes_and_formats(method_dirs, tmp_path):
    made = list(figures.run_figures(load_run(method_dirs[0])))
    widths = {m.name: m.figure.get_figwidth() for m in made}
    assert widths["ga_geffect_bands"] == style.TWO_COLUMN == 6.8
    assert widths["ga_pointwise"] == style.ONE_COLUMN == 3.3
    pdf, png = style.save(made[0].figure, tmp_path, "x")
    assert pdf.read_bytes()[:4] == b"%PDF"
    width, _ = struct.unpack(">II", png.read_bytes()[16:24])           # PNG IHDR
    assert width == round(6.8 * 300)
    with pytest.raises(ValueError, match="width must be one of"):
        style.figure("three")


def test_band_labels_are_honest_for_a_tied_model(short):
    assert band_label(short, "lm") == "final norm + LM head"
    assert band_label(short, "embed") == "embedding"
    tied = short.drop_sel(group="lm_head")                         # the LM head is the embedding
    assert band_label(tied, "lm") == "final norm"
    assert band_label(tied, "embed") == "embedding (tied LM head)"
    ax = plots.plot_geffect(tied, by="band")
    assert "final norm" in [l.get_label() for l in ax.get_lines()]
    assert "lm" not in [l.get_label() for l in ax.get_lines()]


def test_first_order_and_study_axes_keep_labels(sweep_record, short):
    ax = plots.plot_first_order(theory.first_order(short))
    assert "nat" in ax.get_xlabel()
    ax = plots.plot_r_star(sweep_record, best_r=0.4)
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)


def test_runs_measured_every_second_step_still_draw_lines():
    """Runs combined along `run` share the training record's step axis, so a G-effect record
    measured every 2nd step is NaN between: the lines must join the measured points."""
    from geffect.testing import fake_record

    ds = fake_record(seed=0, n_steps=4)
    ds = ds.assign_coords(step=2 * ds.step).reindex(step=range(7))   # steps 0..6, odd ones NaN
    for draw in (plots.plot_geffect, plots.plot_geffect_spread):
        ax = draw(ds, probe="forget")
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]   # not the 0 line
        assert lines, draw.__name__
        for line in lines:
            assert list(line.get_xdata()) == [0, 2, 4, 6], draw.__name__
            assert np.isfinite(line.get_ydata()).all(), draw.__name__
