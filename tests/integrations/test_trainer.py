"""The Trainer mixin writes the same G-effect record as `geffect unlearn` (the oracle)."""
import pytest
import xarray as xr

from geffect.io import open_record
from unlearning import engine
from unlearning.config import RunConfig

from .helpers import trainer_for


def tiny_cfg(tmp_path, **kw) -> RunConfig:
    base = dict(model="tiny-llama", forget_split="forget01", retain_split="retain99", n_forget=8,
                n_retain=32, steps=3, batch_size=2, max_length=256, optimizer="sgd", lr=0.3,
                dtype="float64", geffect_every=1, probe_forget=3, probe_retain=3,
                out=str(tmp_path / "engine"))
    return RunConfig(**{**base, **kw})


def assert_same_record(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if a[name].dtype.kind in "fc":
            xr.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-12)
        else:
            xr.testing.assert_equal(a[name], b[name])


@pytest.mark.parametrize("method,hparams", [("ga", {}), ("sga", {"k": 2, "r": 0.5})])
@pytest.mark.parametrize("accum", [1, 2])
def test_trainer_and_engine_write_equal_geffect_records(tmp_path, method, hparams, accum):
    cfg = tiny_cfg(tmp_path, method=method, hparams=hparams, grad_accum=accum)
    ours = engine.run(cfg, progress=False) / "geffect.nc"
    trainer = trainer_for(cfg, tmp_path / "hf")
    trainer.train()
    theirs = open_record(tmp_path / "hf" / "geffect.nc")
    want = open_record(ours)
    assert theirs.step.values.tolist() == [0, 1, 2]
    assert_same_record(want, theirs)
    if method == "sga":                      # point-wise rows grouped: forget row + its normal rows
        assert theirs.sizes["sample"] == cfg.batch_size * accum
        assert "r_star" in theirs
