"""`geffect unlearn --method rmu` on tiny Llama, GPT-NeoX, Phi and Gemma (issue 13): RMU's
block and trainable parameters come from the model's structure, G-effects are recorded."""
from __future__ import annotations

import re

import pytest

from geffect import open_record
from unlearning.cli import main as cli
from unlearning.models import tiny_model
from unlearning.objectives import build


@pytest.mark.parametrize("model, param", [
    ("tiny-llama", "model.layers.0.mlp.down_proj.weight"),
    ("tiny-neox", "gpt_neox.layers.0.mlp.dense_4h_to_h.weight"),
    ("tiny-phi", "model.layers.0.mlp.fc2.weight"),
    ("tiny-gemma", "model.layers.0.mlp.down_proj.weight"),
])
def test_rmu_runs_from_the_cli(tmp_path, model, param):
    rmu = build("rmu").bind(tiny_model(model))
    assert [n for n, _ in tiny_model(model).named_parameters()
            if re.search(rmu.trainable, n)] == [param]
    out = tmp_path / model
    cli(["unlearn", "--method", "rmu", "--model", model, "--forget-split", "forget01",
         "--retain-split", "retain99[:16]", "--n-forget", "4", "--steps", "2", "--batch-size", "2",
         "--max-length", "256", "--lr", "1e-3", "--geffect-every", "1", "--probe-forget", "2",
         "--probe-retain", "2", "--out", str(out)])
    train = open_record(out / "train.nc", kind="train")
    assert train.step.values.tolist() == [0, 1] and bool(train.loss.notnull().all())
    ge = open_record(out / "geffect.nc")
    assert "other" not in set(ge.component.values)
    moved = ge.grad_sq_norm.sum("step")                      # only the trainable group moves
    assert float(moved.sel(group=param.rsplit(".", 2)[0])) > 0
    assert float(abs(moved).sum()) == pytest.approx(float(moved.sel(group=param.rsplit(".", 2)[0])))
