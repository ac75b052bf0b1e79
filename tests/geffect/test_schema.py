"""Schema validation: fake records pass, broken ones fail with messages naming what was wrong."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from geffect.schema import DEFINITIONS, SchemaError, fallback_groups, validate
from geffect.testing import fake_record, fake_train_record


@pytest.mark.parametrize("seed", [0, 1])
def test_fake_records_validate_and_are_consistent(seed):
    ds = fake_record(seed=seed, n_steps=3, n_layers=6, n_instances=5, n_samples=3)
    assert validate(ds) is ds
    f = ds.geffect_instance.where(ds.split == "forget").mean("instance")
    np.testing.assert_allclose(f.values, ds.geffect.sel(probe="forget").values)
    np.testing.assert_allclose(ds.geffect_pointwise.sum("sample").values, ds.geffect.values)
    g = ds.gram.values
    assert (np.linalg.eigvalsh(g) > -1e-12).all()                 # PSD Gram
    assert json.loads(ds.attrs["definitions"]).keys() == DEFINITIONS.keys()
    assert fallback_groups(ds) == []
    assert set(ds.band.values) == {"embed", "shallow", "middle", "deep", "lm"}
    validate(fake_train_record(seed=seed), kind="train")
    validate(fake_record(kind="train"), kind="train")
    assert "gram" not in fake_record(with_divergence=False)


def test_extra_variables_and_run_dim_allowed():
    ds = fake_record()
    ds["my_extra"] = ds.geffect * 2
    validate(ds)
    sweep = ds.expand_dims(run=[0, 1])
    validate(sweep)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop_vars("geffect"), "missing variable 'geffect'"),
    (lambda d: d.assign(risk=d.risk.transpose("instance", "step")),
     "variable 'risk': expected dims ('step', 'instance')"),
    (lambda d: d.assign_coords(component=("group", ["bogus"] * d.sizes["group"])),
     "coordinate 'component': expected values in"),
    (lambda d: d.drop_vars("layer"), "missing coordinate 'layer' on dim 'group'"),
    (lambda d: d.assign_attrs(config="{not json"), "attr 'config': expected a JSON string"),
    (lambda d: d.assign_attrs(risk_reduction="median"), "attr 'risk_reduction'"),
    (lambda d: d.drop_attrs(), "missing attr 'sign_convention'"),
    (lambda d: d.assign_coords(split=("instance", ["other"] * d.sizes["instance"])),
     "every instance split must be a probe"),
    (lambda d: d.assign(sample_id=d.sample_id.copy(data=np.zeros(d.sample_id.shape))),
     "variable 'sample_id': expected dtype kind 'U'"),
])
def test_validate_names_what_is_wrong(mutate, message):
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(mutate(fake_record()))


def test_validate_train_kind_and_bad_kind():
    t = fake_train_record()
    with pytest.raises(SchemaError, match="missing variable 'lr'"):
        validate(t.drop_vars("lr"), kind="train")
    bad = t.assign(eval_x=t.loss_term)
    with pytest.raises(SchemaError, match="eval_<metric> expects dims"):
        validate(bad, kind="train")
    with pytest.raises(SchemaError, match="kind must be"):
        validate(t, kind="nope")
    with pytest.raises(SchemaError, match="expected an xarray.Dataset"):
        validate({"a": 1})
    assert isinstance(SchemaError("x"), ValueError)


def test_schema_and_testing_do_not_import_torch():
    code = ("import sys, geffect, geffect.schema, geffect.testing; geffect.fake_record(); "
            "geffect.validate(geffect.fake_record()); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _eval_record(step=0):
    from unlearning.evaluation.record import Part, build_record

    part = Part("forget", ["tofu/1", "tofu/2"], {"nll": np.array([1.0, 2.0])}, np.array([3, 4]))
    return build_record([part], {"forget_nll": 1.5}, benchmark="tofu", model_name="m", step=step)


def test_eval_records_validate_append_and_name_what_is_wrong(tmp_path):
    from geffect.io import append_record, open_record

    ds = _eval_record()
    assert validate(ds, kind="eval") is ds
    path = tmp_path / "eval.nc"
    append_record(ds, path)                                     # kind detected from `summary`
    append_record(_eval_record(step=5), path)
    back = open_record(path, kind="eval")
    assert back.step.values.tolist() == [0, 5]
    assert back.nll.sel(step=5).values.tolist() == [1.0, 2.0]
    with pytest.raises(SchemaError, match="missing variable 'summary'"):
        validate(ds.drop_vars("summary"), kind="eval")
    with pytest.raises(SchemaError, match=r"'nll': per-instance metrics expect dims"):
        validate(ds.assign(nll=ds.nll.isel(step=0)), kind="eval")
    with pytest.raises(SchemaError, match="missing attr 'benchmark'|benchmark"):
        validate(ds.drop_attrs(), kind="eval")
    with pytest.raises(SchemaError, match="kind must be one of"):
        validate(ds, kind="evaluation")
