"""Records read for people: definitions as variable attrs, one call to open a directory of runs."""
from __future__ import annotations

import json

import xarray as xr

import analysis
from analysis import testing
from analysis.records import DERIVED, describe, load_run
from geffect.schema import DEFINITIONS


def test_describe_attaches_the_records_definitions_without_touching_it():
    ds = testing.geffect_run_record(seed=0)
    before = ds.copy(deep=True)
    out = describe(ds)
    own = json.loads(ds.attrs["definitions"])
    for name in ("geffect", "geffect_instance", "risk"):
        assert out[name].attrs["definition"] == own[name]
    assert out.geffect.attrs["units"] == "nat^2" and out.risk.attrs["units"] == "nat/token"
    xr.testing.assert_identical(ds, before)                         # input attrs unchanged
    assert "definition" not in ds.geffect.attrs
    xr.testing.assert_equal(out, ds)                                # values unchanged


def test_open_runs_is_one_run_indexed_dataset(tmp_path):
    dirs = testing.write_methods(tmp_path / "demo")
    ds = analysis.open_runs(tmp_path / "demo")
    assert ds["run"].values.tolist() == [d.name for d in dirs]
    assert ds.method.values.tolist() == ["ga", "npo", "sga"]
    xr.testing.assert_identical(ds, describe(analysis.combine_runs(dirs)))
    assert ds.geffect_quantile.attrs["definition"] == DERIVED["geffect_quantile"]
    assert ds.loss.attrs["definition"] == DEFINITIONS["loss"]
    assert load_run(dirs[0]).geffect.geffect.attrs["definition"].startswith("<grad L, grad R_probe>")
    assert "grad R_probe" in ds._repr_html_()                      # Jupyter shows the definitions
