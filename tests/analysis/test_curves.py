"""G-effect spread and probe-risk curves draw the values a slow per-instance loop computes."""
from __future__ import annotations

import numpy as np
import pytest

from analysis import captions, curves, plots, reduce, testing
from analysis.records import load_run


@pytest.fixture(scope="module")
def sga():
    return testing.geffect_run_record(seed=1, method="sga", r=0.5)


def oracle_quartiles(ds, values, probe):
    """(step, 3) quartiles over the probe's instances, one np.percentile per step."""
    cols = [i for i in range(ds.sizes["instance"]) if ds.split.values[i] == probe]
    return np.array([np.percentile(values[t, cols], [25, 50, 75]) for t in range(values.shape[0])])


def band_bounds(coll, steps):
    """(lower, upper) of a fill_between band at each step, read back from its polygon."""
    v = coll.get_paths()[0].vertices
    lo = [v[np.isclose(v[:, 0], s), 1].min() for s in steps]
    hi = [v[np.isclose(v[:, 0], s), 1].max() for s in steps]
    return np.array(lo), np.array(hi)


def instance_geffects(ds):
    """(step, instance) G-effects summed over groups by a plain loop."""
    g = ds.geffect_instance.transpose("step", "instance", "group").values
    return np.array([[sum(g[t, i, :]) for i in range(g.shape[1])] for t in range(g.shape[0])])


@pytest.mark.parametrize("probe", ["forget", "retain"])
def test_spread_draws_median_iqr_and_mean_over_instances(sga, probe):
    ax = plots.plot_geffect_spread(sga, probe=probe)
    want = oracle_quartiles(sga, instance_geffects(sga), probe)
    median, mean = ax.get_lines()[0], ax.get_lines()[1]
    np.testing.assert_allclose(median.get_ydata(), want[:, 1])
    np.testing.assert_allclose(mean.get_ydata(), sga.geffect.sel(probe=probe).sum("group").values)
    assert mean.get_linestyle() == ":"
    lo, hi = band_bounds(ax.collections[0], sga.step.values)
    np.testing.assert_allclose(lo, want[:, 0])
    np.testing.assert_allclose(hi, want[:, 2])
    assert ax.get_yscale() == "linear"


def test_combined_spread_is_each_runs_own_quartiles(method_dirs, methods_record):
    ax = plots.plot_geffect_spread(methods_record, probe="forget")
    medians = {l.get_label(): l.get_ydata() for l in ax.get_lines() if not l.get_label().startswith("_")}
    for d in method_dirs:
        run = load_run(d)
        want = oracle_quartiles(run.geffect, instance_geffects(run.geffect), "forget")
        np.testing.assert_allclose(medians[run.label], want[:, 1])


def test_symlog_when_one_method_is_100x_larger(methods_record):
    big = methods_record.copy()
    factor = xr_factor(methods_record, {"npo": 100.0})
    big["geffect_quantile"] = methods_record.geffect_quantile * factor
    big["geffect_total"] = methods_record.geffect_total * factor
    ax = plots.plot_geffect_spread(big, probe="forget")
    assert ax.get_yscale() == "symlog"
    mags = np.abs(big.geffect_quantile.sel(probe="forget")).max(["step", "quantile"])
    assert ax.yaxis.get_transform().linthresh == pytest.approx(float(mags.min()))
    assert "symlog" in ax.get_ylabel() and "\u0394R \u2248 \u2212\u03b7\u00b7e" in ax.get_ylabel()
    assert f"symmetric-log (linear within \u00b1{float(mags.min()):.2g})" in captions.geffect_curves(big, [ax])
    assert plots.plot_geffect_spread(methods_record).get_yscale() == "linear"
    assert plots.plot_geffect_spread(big, scale="linear").get_yscale() == "linear"
    assert plots.plot_geffect_spread(methods_record, scale="symlog").get_yscale() == "symlog"
    with pytest.raises(ValueError, match="scale must be one of"):
        plots.plot_geffect_spread(methods_record, scale="log")


def xr_factor(ds, factors):
    import xarray as xr
    return xr.DataArray([factors.get(str(r), 1.0) for r in ds.run.values], coords={"run": ds.run})


def test_symlog_threshold():
    assert curves.symlog_threshold([1.0, 9.0]) is None
    assert curves.symlog_threshold([2.0, 30.0, 5.0]) == 2.0
    assert curves.symlog_threshold([0.0, 1.0, 5.0]) is None            # zero lines do not count
    assert curves.symlog_threshold([float("nan"), 1.0]) is None
    assert curves.symlog_threshold([float("nan"), 3.0, 2.0], ratio=0) == 2.0   # forced symlog


def test_risk_is_the_fixed_probe_risk_not_the_batch_nll(method_dirs, methods_record):
    ax = plots.plot_risk(methods_record, probe="forget")
    lines = {l.get_label(): l.get_ydata() for l in ax.get_lines() if not l.get_label().startswith("_")}
    for d in method_dirs:
        run = load_run(d)
        g = run.geffect
        forget = [i for i in range(g.sizes["instance"]) if g.split.values[i] == "forget"]
        want = np.array([np.mean(g.risk.values[t, forget]) for t in range(g.sizes["step"])])
        np.testing.assert_allclose(lines[run.label], want)
        assert not np.allclose(lines[run.label], run.train.nll_forget.values)
        lo, hi = band_bounds(ax.collections[list(lines).index(run.label)], g.step.values)
        q = oracle_quartiles(g, g.risk.values, "forget")
        np.testing.assert_allclose(lo, q[:, 0])
        np.testing.assert_allclose(hi, q[:, 2])
    assert "fixed probe set" in ax.get_ylabel() and "nat / token" in ax.get_ylabel()


def test_risk_of_a_training_record_is_refused():
    from geffect.testing import fake_train_record
    with pytest.raises(ValueError, match="batch"):
        plots.plot_risk(fake_train_record())


def test_probe_quantiles_match_numpy(sga):
    q = reduce.probe_quantiles(sga.risk)
    assert q.dims == ("step", "probe", "quantile")
    for p in ("forget", "retain"):
        np.testing.assert_allclose(q.sel(probe=p).values, oracle_quartiles(sga, sga.risk.values, p))
    with pytest.raises(ValueError, match="'split' coordinate on dim 'instance'"):
        reduce.probe_quantiles(sga.risk.drop_vars("split"))
