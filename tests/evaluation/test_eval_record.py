"""Record layout, netCDF round trip and the JSON summary (record.py)."""
import json

import numpy as np
import pytest
import xarray as xr

from unlearning.evaluation.record import Part, build_record, summary_json


def _record(step=0):
    parts = [Part("forget", ["tofu/3960", "tofu/3961"], {"probability": np.array([0.2, 0.4]),
                                                         "nll": np.array([1.6, 0.9])},
                  np.array([10, 12])),
             Part("holdout", ["tofu-holdout/0"], {"mia_loss": np.array([2.5])}, np.array([7]))]
    return build_record(parts, {"forget_Q_A_Prob": 0.3, "forget_quality": float("nan")},
                        benchmark="tofu", model_name="tiny", step=step,
                        notes={"forget_quality": "NaN: no retain model"}, forget_split="forget01")


def test_layout_and_nan_where_not_applicable():
    ds = _record()
    assert dict(ds.sizes) == {"step": 1, "instance": 3, "metric": 2}
    assert ds.instance_id.values.tolist() == ["tofu/3960", "tofu/3961", "tofu-holdout/0"]
    assert ds.split.values.tolist() == ["forget", "forget", "holdout"]
    assert ds.n_tokens.values.tolist() == [10, 12, 7]
    assert ds.probability.dims == ("step", "instance")
    np.testing.assert_array_equal(ds.probability.values[0, :2], [0.2, 0.4])
    assert np.isnan(ds.probability.values[0, 2]) and np.isnan(ds.mia_loss.values[0, 0])
    assert ds.summary.sel(metric="forget_Q_A_Prob").item() == 0.3
    defs = json.loads(ds.attrs["definitions"])
    assert "citation" in defs["forget_Q_A_Prob"] and "averaging" in defs["forget_Q_A_Prob"]
    for key in ("benchmark", "model", "created_at", "creation_library_version", "notes"):
        assert key in ds.attrs


def test_netcdf_round_trip_and_step_concat(tmp_path):
    ds = xr.concat([_record(0), _record(5)], dim="step")
    ds.to_netcdf(tmp_path / "eval.nc")
    back = xr.open_dataset(tmp_path / "eval.nc").load()
    xr.testing.assert_identical(back.drop_attrs(), ds.drop_attrs())
    assert back.step.values.tolist() == [0, 5]


def test_summary_json_nan_is_none_and_notes_come_along():
    out = summary_json(_record(3))
    assert out["forget_Q_A_Prob"] == 0.3 and out["forget_quality"] is None
    assert out["step"] == 3 and out["benchmark"] == "tofu"
    assert "forget_quality" in out["notes"]
    json.dumps(out, allow_nan=False)


def test_part_rejects_unknown_variables_and_wrong_lengths():
    with pytest.raises(ValueError, match="unknown per-instance"):
        Part("forget", ["a"], {"accuracy": np.array([1.0])})
    with pytest.raises(ValueError, match="2 values for 1 instances"):
        Part("forget", ["a"], {"nll": np.array([1.0, 2.0])})


def test_table_markdown_marks_missing_numbers():
    from unlearning.evaluation.table import COLUMNS, markdown

    md = markdown({"before": {"forget_Q_A_Prob": 0.5, "forget_quality": None, "seconds": 12.4},
                   "ga": {c: 0.25 for c in COLUMNS}})
    lines = md.splitlines()
    assert lines[0].startswith("| model | forget_Q_A_Prob |") and len(lines) == 4
    assert lines[2].startswith("| before | 0.500 | n/a |") and lines[2].endswith("| 12 |")
    assert lines[3] == "| ga | " + " | ".join(["0.250"] * len(COLUMNS)) + " | 0 |"
