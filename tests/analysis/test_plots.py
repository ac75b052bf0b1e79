"""Plots under Agg on fake records: they return Axes, draw the reduced values, leave their
input unchanged and write no files."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis import plots, reduce, testing, theory
from geffect.testing import fake_record, fake_train_record


@pytest.fixture(scope="module")
def sga():
    return testing.geffect_run_record(seed=1, method="sga", r=0.5)


@pytest.fixture(scope="module")
def train():
    return fake_train_record(seed=2)


CASES = {
    "geffect_total": (lambda d: d["sga"], lambda ds, ax: plots.plot_geffect(ds, ax)),
    "geffect_band": (lambda d: d["sga"], lambda ds, ax: plots.plot_geffect(ds, ax, probe="retain", by="band")),
    "geffect_cumulative": (lambda d: d["sga"], lambda ds, ax: plots.plot_geffect(ds, ax, by="layer", cumulative=True)),
    "geffect_runs": (lambda d: d["methods"], lambda ds, ax: plots.plot_geffect(ds, ax)),
    "heatmap": (lambda d: d["sga"], lambda ds, ax: plots.plot_layer_heatmap(ds, ax)),
    "pointwise": (lambda d: d["sga"], lambda ds, ax: plots.plot_pointwise(ds, ax)),
    "pointwise_step": (lambda d: d["sga"], lambda ds, ax: plots.plot_pointwise(ds, ax, step=2)),
    "instances": (lambda d: d["sga"], lambda ds, ax: plots.plot_instance_geffects(ds, ax)),
    "spread": (lambda d: d["methods"], lambda ds, ax: plots.plot_geffect_spread(ds, ax, probe="retain")),
    "spread_single": (lambda d: d["sga"], lambda ds, ax: plots.plot_geffect_spread(ds, ax)),
    "risk": (lambda d: d["methods"], lambda ds, ax: plots.plot_risk(ds, ax)),
    "risk_single": (lambda d: d["sga"], lambda ds, ax: plots.plot_risk(ds, ax, probe="retain")),
    "divergence": (lambda d: d["sga"], lambda ds, ax: plots.plot_divergence(ds, ax)),
    "norm_ratio": (lambda d: d["sga"], lambda ds, ax: plots.plot_divergence(ds, ax, quantity="norm_ratio", by=None)),
    "training": (lambda d: d["methods"], lambda ds, ax: plots.plot_training(ds, ax, var="grad_norm")),
    "training_single": (lambda d: d["train"], lambda ds, ax: plots.plot_training(ds, ax, var="nll_forget")),
    "loss_terms": (lambda d: d["train"], lambda ds, ax: plots.plot_loss_terms(ds, ax)),
    "smoothing": (lambda d: d["sweep"], lambda ds, ax: plots.plot_smoothing_study(ds, ax)),
    "smoothing_tradeoff": (lambda d: d["sweep"], lambda ds, ax: plots.plot_smoothing_study(
        ds, ax, metric="nll_forget", tradeoff=theory.forgetting_given_retention(0.1))),
    "r_star": (lambda d: d["sweep"], lambda ds, ax: plots.plot_r_star(ds, ax, best_r=0.4)),
    "first_order": (lambda d: theory.first_order(d["sga"]), lambda ds, ax: plots.plot_first_order(ds, ax)),
}


@pytest.fixture
def data(sga, train, sweep_record, methods_record):
    return {"sga": sga, "train": train, "sweep": sweep_record, "methods": methods_record}


@pytest.mark.parametrize("make_ax", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_plot_returns_axes_keeps_input_writes_nothing(case, make_ax, data, tmp_path, monkeypatch):
    pick, draw = CASES[case]
    ds = pick(data)
    before = copy.deepcopy(ds)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Figure, "savefig", lambda *a, **k: pytest.fail("a plot saved a figure"))
    ax = Figure().subplots() if make_ax else None
    out = draw(ds, ax)
    assert isinstance(out, Axes)
    if make_ax:
        assert out is ax
    assert out.get_xlabel() and out.get_ylabel()
    xr.testing.assert_identical(ds, before)
    assert list(tmp_path.iterdir()) == []


def test_geffect_lines_are_the_recorded_totals(sga):
    ax = plots.plot_geffect(sga, probe="forget")
    line, = ax.get_lines()[:1]
    np.testing.assert_allclose(line.get_ydata(), sga.geffect.sel(probe="forget").sum("group").values)
    assert "\u0394R \u2248 \u2212\u03b7\u00b7e" in ax.get_ylabel()          # the sign convention
    assert "(nat\u00b2)" in ax.get_ylabel()                                   # and the unit
    ax = plots.plot_geffect(sga, probe="retain", by="band")
    bands = reduce.by_band(sga.geffect.sel(probe="retain"))
    lines = {l.get_label(): l.get_ydata() for l in ax.get_lines()}
    names = {"embed": "embedding", "shallow": "shallow (layers 0\u20131)", "middle": "middle (layer 2)",
             "deep": "deep (layer 3)", "lm": "final norm + LM head"}     # untied fake model
    for b in reduce.BANDS:
        np.testing.assert_allclose(lines[names[b]], bands.sel(band=b).values)


def test_one_line_per_run(methods_record):
    ax = plots.plot_geffect(methods_record)
    labels = [l.get_label() for l in ax.get_lines() if not l.get_label().startswith("_")]
    assert labels == ["ga", "npo", "sga gls r=+0.5"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(),
                               methods_record.geffect_total.sel(run="npo", probe="forget").values)


def test_heatmap_values_are_block_sums(sga):
    ax = plots.plot_layer_heatmap(sga, probe="forget")
    mesh = ax.collections[0]
    want = reduce.by_layer(sga.geffect.sel(probe="forget"), blocks_only=True).transpose("layer", "step")
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(want.shape), want.values)
    lo, hi = mesh.get_clim()
    assert lo == -hi                                                  # symmetric about 0


def test_pointwise_points_and_weight_colour(sga):
    rec = sga.assign(npo_weight=(("step", "sample"), np.arange(sga.sizes["step"] * sga.sizes["sample"],
                                                               dtype=float).reshape(sga.sizes["step"], -1)))
    ax = plots.plot_pointwise(rec, color="npo_weight")
    pts = ax.collections[0]
    pw = sga.geffect_pointwise.sum("group")
    np.testing.assert_allclose(pts.get_offsets()[:, 0], pw.sel(probe="forget").values.ravel())
    np.testing.assert_allclose(pts.get_offsets()[:, 1], pw.sel(probe="retain").values.ravel())
    np.testing.assert_allclose(pts.get_array(), rec.npo_weight.values.ravel())
    with pytest.raises(ValueError, match="color variable 'nope'"):
        plots.plot_pointwise(sga, color="nope")


def test_by_band_needs_single_run(methods_record):
    with pytest.raises(ValueError, match="needs a single run"):
        plots.plot_geffect(methods_record, by="band")


def test_divergence_needs_sga_record():
    with pytest.raises(ValueError, match="cosine_ga_sga"):
        plots.plot_divergence(fake_record(with_divergence=False, method="ga"))


def test_smoothing_study_stars_the_best_rate(sweep_record):
    ax = plots.plot_smoothing_study(sweep_record, metric="model_utility")
    star = [c for c in ax.collections if c.get_label().startswith("best r")][0]
    assert star.get_offsets()[0, 0] == pytest.approx(0.4)
    assert star.get_offsets()[0, 1] == pytest.approx(0.8)
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [-0.5, 0.0, 0.4, 0.8])
    r_star = [l for l in ax.get_lines() if "r*" in l.get_label()][0]
    assert r_star.get_xdata()[0] == pytest.approx(float(sweep_record.r_star.mean()))


def test_training_lines_join_the_steps_between_nan_monitoring_gaps(train):
    """nll_retain is NaN between monitoring steps; the line joins the measured steps."""
    ds = train.copy(deep=True)
    ds["nll_retain"][1::2] = np.nan
    ax = plots.plot_training(ds, var="nll_retain")
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), ds.step.values[::2])
    np.testing.assert_allclose(line.get_ydata(), ds.nll_retain.values[::2])
