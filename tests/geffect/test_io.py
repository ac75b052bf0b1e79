"""Atomic write / append / open of records."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from geffect import Recorder, append_record, open_record, write_record
from geffect.risk import row_risk
from geffect.schema import SchemaError
from geffect.testing import fake_record, fake_train_record
from unlearning.models import tiny_model

from .conftest import make_batch


def test_round_trip_keeps_values_coords_and_attrs(tmp_path):
    ds = fake_record(seed=3)
    path = write_record(ds, tmp_path / "sub" / "g.nc")
    back = open_record(path)
    xr.testing.assert_allclose(back, ds)
    assert back.attrs == ds.attrs
    assert not list(tmp_path.glob("sub/*.tmp"))
    with xr.open_dataset(path) as plain:                      # opens with one plain call too
        assert plain.sizes["group"] == ds.sizes["group"]
    t = fake_train_record()
    xr.testing.assert_allclose(open_record(write_record(t, tmp_path / "train.nc")), t)


def test_append_along_step_pads_samples(tmp_path):
    ds = fake_record(n_steps=3, n_samples=4)
    path = tmp_path / "g.nc"
    for t in range(3):
        piece = ds.isel(step=[t])
        if t == 1:
            piece = piece.isel(sample=[0, 1])
        append_record(piece, path)
    back = open_record(path)
    assert back.step.values.tolist() == [0, 1, 2] and back.sizes["sample"] == 4
    assert list(back.sample_id.values[1]) == [ds.sample_id.values[1, 0], ds.sample_id.values[1, 1],
                                              "", ""]
    assert np.isnan(back.geffect_pointwise.values[1, 2:]).all()
    np.testing.assert_allclose(back.geffect.values, ds.geffect.values)
    np.testing.assert_allclose(back.geffect_pointwise.values[[0, 2]],
                               ds.geffect_pointwise.values[[0, 2]])
    with pytest.raises(SchemaError, match=r"steps \[2\] are already in"):
        append_record(ds.isel(step=[2]), path)


def test_crash_mid_write_leaves_previous_file(tmp_path, monkeypatch):
    ds = fake_record(n_steps=2)
    path = tmp_path / "g.nc"
    append_record(ds.isel(step=[0]), path)

    def crash(self, target, *a, **k):
        with open(target, "wb") as f:
            f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    with pytest.raises(OSError, match="disk full"):
        append_record(ds.isel(step=[1]), path)
    monkeypatch.undo()
    back = open_record(path)
    assert back.step.values.tolist() == [0]
    assert not list(tmp_path.glob("*.tmp"))


def test_write_and_open_validate(tmp_path):
    with pytest.raises(SchemaError, match="missing variable 'risk'"):
        write_record(fake_record().drop_vars("risk"), tmp_path / "bad.nc")
    fake_record().drop_vars("risk").to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(SchemaError, match="missing variable 'risk'"):
        open_record(tmp_path / "bad.nc")
    with pytest.raises(FileNotFoundError):
        open_record(tmp_path / "none.nc")


def test_recorder_steps_append_and_reopen(tmp_path):
    model = tiny_model("tiny-llama-tied", seed=0)
    probes = {"forget": make_batch(2, seed=1, prefix="f"), "retain": make_batch(2, seed=2,
                                                                              prefix="r")}
    path = tmp_path / "geffect.nc"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        train = make_batch(3 - step % 2, seed=1, prefix="f")   # holds the forget probes f0, f1
        opt.zero_grad(set_to_none=True)
        with Recorder(model, probes, attrs={"model": "tiny-llama-tied", "method": "ga",
                                            "config": {"lr": 0.1}}) as rec:
            out = model(input_ids=train["input_ids"], attention_mask=train["attention_mask"])
            rec.backward(-row_risk(out.logits, train["labels"]).mean(),
                         sample_ids=train["instance_id"])
            append_record(rec.measure(step=step), path)
        opt.step()
    back = open_record(path)
    assert back.sizes["step"] == 3 and back.sizes["sample"] == 3
    assert back.attrs["method"] == "ga" and '"lr": 0.1' in back.attrs["config"]
    assert (back.risk.sel(instance=back.split == "forget").diff("step") > 0).all()  # GA works
