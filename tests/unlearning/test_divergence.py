"""Divergence and untrusted checkpoints (issue 19, cases 1 and 2) on tiny models.

A step is applied only when its loss and gradient are finite; a checkpoint replaces the
previous one only when finite; a crafted trainer state is refused without running anything.
"""
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch

import unlearning.engine as engine
from geffect.io import open_record
from unlearning.checkpoint import CheckpointError, checkpoints, load_state, save_checkpoint
from unlearning.config import RunConfig
from unlearning.models import load_model
from unlearning.objectives import Loss, register


def tiny_cfg(tmp_path, **kw) -> RunConfig:
    base = dict(model="tiny-llama", n_forget=4, n_retain=8, steps=3, batch_size=2, lr=1e-3,
                out=str(tmp_path / "run"))
    return RunConfig(**{**base, **kw})


def params_of(ckpt):
    return load_model(str(ckpt))[0].state_dict()


@register("_nan_grad_at_step_2")
@dataclass(frozen=True)
class NanGradAtStep2:
    """GA, except that at the third call the loss stays finite and its gradient is NaN:
    0 * sqrt(0) is 0, its derivative 0 * inf is NaN."""

    calls: list = field(default_factory=list)
    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out):
        self.calls.append(1)
        nll = out["forget"].batch_nll                       # GA's loss under the run's reduction
        total = -nll
        if len(self.calls) == 3:
            total = total + 0.0 * torch.sqrt(nll - nll)
        return Loss(total=total, terms={"forget_nll": nll})


def test_nan_gradient_with_finite_loss_is_not_applied_and_the_last_checkpoint_named(tmp_path):
    cfg = tiny_cfg(tmp_path, method="_nan_grad_at_step_2", steps=5, checkpoint_every=1)
    with pytest.raises(engine.DivergedError) as err:
        engine.run(cfg, progress=False)
    msg = str(err.value)
    run = tmp_path / "run"
    assert "diverged at step 2: the gradient norm is nan" in msg
    assert "not applied" in msg and f"{run / 'checkpoints' / 'step-000002'} (step 2)" in msg
    assert open_record(run / "train.nc").step.values.tolist() == [0, 1]
    (ckpt,) = checkpoints(run / "checkpoints")
    assert ckpt.name == "step-000002" and load_state(ckpt)["step"] == 2
    # the saved parameters are those after two GA steps: the NaN step changed nothing
    ga = engine.run(tiny_cfg(tmp_path, method="ga", steps=2, out=str(tmp_path / "ga")), progress=False)
    want = params_of(checkpoints(ga / "checkpoints")[-1])
    for k, v in params_of(ckpt).items():
        assert torch.equal(v, want[k]), k


def test_huge_sgd_step_keeps_only_finite_checkpoints(tmp_path):
    """The issue's reproduction: sgd, lr 1e6, a checkpoint every 2 steps."""
    cfg = tiny_cfg(tmp_path, method="ga", optimizer="sgd", lr=1e6, steps=8, checkpoint_every=2)
    with pytest.raises(engine.DivergedError, match="diverged at step") as err:
        engine.run(cfg, progress=False)
    done = checkpoints(tmp_path / "run" / "checkpoints")
    assert done and str(done[-1]) in str(err.value)
    for v in params_of(done[-1]).values():
        assert bool(torch.isfinite(v).all())


def test_max_loss_stops_before_the_update(tmp_path):
    cfg = tiny_cfg(tmp_path, method="ga", max_loss=1.0)             # GA's loss is about -5.6
    with pytest.raises(engine.DivergedError, match="exceeds max_loss=1.0"):
        engine.run(cfg, progress=False)
    assert not (tmp_path / "run" / "train.nc").exists()


def test_a_nonfinite_checkpoint_never_replaces_the_previous_one(tmp_path):
    model, tok = load_model("tiny-llama")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    first = save_checkpoint(tmp_path, 1, model, tok, opt, sched)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    with pytest.raises(CheckpointError, match=f"model.norm.weight.*last good checkpoint: {first}"):
        save_checkpoint(tmp_path, 2, model, tok, opt, sched)
    assert checkpoints(tmp_path) == [first]


class Planted:
    """A pickle that, if unpickled by a trusting loader, writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_trainer_state_is_refused_without_running_anything(tmp_path):
    cfg = tiny_cfg(tmp_path, method="ga", steps=1)
    run = engine.run(cfg, progress=False)
    (ckpt,) = checkpoints(run / "checkpoints")
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "optimizer": Planted(marker), "scheduler": {}}, ckpt / "trainer_state.pt")
    with pytest.raises(CheckpointError, match="refusing .*trainer_state.pt.*weights_only=True"):
        engine.run(tiny_cfg(tmp_path, method="ga", steps=2), progress=False)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_state(ckpt)
    assert not marker.exists()


def test_reloaded_checkpoints_run_the_attention_kernel_the_run_started_with(tmp_path):
    run = engine.run(tiny_cfg(tmp_path, method="ga", steps=1), progress=False)
    model = load_model(str(checkpoints(run / "checkpoints")[-1]))[0]
    assert model.config._attn_implementation == load_model("tiny-llama")[0].config._attn_implementation == "eager"
