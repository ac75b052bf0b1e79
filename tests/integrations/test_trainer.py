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


@pytest.mark.parametrize("reduction", ["token", "sequence"])
@pytest.mark.parametrize("method,hparams", [("ga", {}), ("sga", {"k": 2, "r": 0.5})])
@pytest.mark.parametrize("accum", [1, 2])
def test_trainer_and_engine_write_equal_geffect_records(tmp_path, method, hparams, accum,
                                                        reduction):
    cfg = tiny_cfg(tmp_path, method=method, hparams=hparams, grad_accum=accum, steps=2,
                   loss_reduction=reduction)
    ours = engine.run(cfg, progress=False) / "geffect.nc"
    trainer = trainer_for(cfg, tmp_path / "hf")
    trainer.train()
    theirs = open_record(tmp_path / "hf" / "geffect.nc")
    want = open_record(ours)
    assert theirs.step.values.tolist() == [0, 1]          # step 1 follows the step-0 update
    assert_same_record(want, theirs)
    for key in ("pointwise", "risk_reduction", "sga_loss_reduction"):
        assert theirs.attrs.get(key) == want.attrs.get(key), key
    if method == "sga":                      # point-wise rows grouped: forget row + its normal rows
        assert theirs.sizes["sample"] == cfg.batch_size * accum
        assert "r_star" in theirs


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_unnamed_rows_are_instances_and_a_rerun_replaces_the_record(tmp_path):
    cfg = tiny_cfg(tmp_path, method="ga", steps=2)
    for _ in range(2):                                   # the second run overwrites steps 0, 1
        trainer = trainer_for(cfg, tmp_path / "hf")
        trainer.geffect_sample_ids = lambda inputs: None   # the mixin's default
        trainer.train()
    ds = open_record(tmp_path / "hf" / "geffect.nc")
    assert ds.step.values.tolist() == [0, 1]
    assert ds.sample_id.values[0].tolist() == ["row0", "row1"]
    assert ds.attrs["pointwise"] == "instance_objective"     # PG-effects <grad L_s, grad R>
    # each row's contribution w_s <grad L_s, grad R>, summed over rows, is the step's G-effect
    xr.testing.assert_allclose((ds.geffect_pointwise * ds.sample_weight).sum("sample"),
                               ds.geffect, rtol=1e-10)
    assert _hooks(trainer.model) == 0


def test_without_sample_weights_the_rows_are_contributions(tmp_path):
    cfg = tiny_cfg(tmp_path, method="sga", hparams={"k": 2, "r": 0.5}, steps=1, grad_accum=2)
    trainer = trainer_for(cfg, tmp_path / "hf")
    trainer.geffect_sample_weights = lambda inputs: None     # the mixin's default
    trainer.train()
    ds = open_record(tmp_path / "hf" / "geffect.nc")
    assert ds.attrs["pointwise"] == "contribution"
    assert (ds.sample_weight == 1).all()
    xr.testing.assert_allclose(ds.geffect_pointwise.sum("sample"), ds.geffect, rtol=1e-10)
    want = open_record(engine.run(cfg, progress=False) / "geffect.nc")
    xr.testing.assert_allclose(ds.geffect_pointwise, want.geffect_pointwise * want.sample_weight,
                               rtol=1e-10, atol=1e-12)


def test_unsupported_setups_fail_loudly_and_leave_no_hooks(tmp_path):
    cfg = tiny_cfg(tmp_path, method="ga", steps=1)
    trainer = trainer_for(cfg, tmp_path / "hf")
    trainer.args.gradient_checkpointing = True
    with pytest.raises(NotImplementedError, match="gradient checkpointing"):
        trainer.train()
    assert _hooks(trainer.model) == 0
    with pytest.raises(ValueError, match="geffect_every: expected a positive"):
        trainer_for(tiny_cfg(tmp_path, method="ga", geffect_every=0), tmp_path / "x")


def test_sample_ids_for_some_micro_batches_only_are_refused(tmp_path):
    cfg = tiny_cfg(tmp_path, method="ga", steps=1, grad_accum=2)
    trainer = trainer_for(cfg, tmp_path / "hf")
    calls = []
    trainer.geffect_sample_ids = lambda inputs: calls.append(1) or (None if len(calls) == 1 else
                                                                    inputs["forget"]["instance_id"])
    with pytest.raises(ValueError, match="ids for all or for none"):
        trainer.train()
    assert _hooks(trainer.model) == 0
