"""The engine on tiny models: direction of a GA step, divergence, resume, reference loading."""
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
import xarray as xr

import unlearning.engine as engine
from geffect.io import open_record
from unlearning.config import RunConfig
from unlearning.checkpoint import checkpoints
from unlearning.cli import main as cli
from unlearning.models import load_model
from unlearning.objectives import Loss, register


def tiny_cfg(tmp_path, **kw) -> RunConfig:
    base = dict(model="tiny-llama", forget_split="forget01", retain_split="retain99", n_forget=8,
                n_retain=32, steps=3, batch_size=2, max_length=256, lr=1e-3, out=str(tmp_path / "run"))
    return RunConfig(**{**base, **kw})


@pytest.mark.parametrize("reduction", ["sequence", "token"])
def test_one_sgd_step_of_ga_raises_forget_nll(tmp_path, reduction):
    cfg = tiny_cfg(tmp_path, method="ga", optimizer="sgd", lr=0.5, steps=1, batch_size=4,
                   loss_reduction=reduction)
    task_batch = engine.build_task(load_model("tiny-llama")[1], "tofu", "forget01", "retain99",
                                   n_forget=8, max_length=256).batch(0, 4, ("forget",))["forget"]
    with torch.no_grad():   # the record's forget NLL is reduced as the loss is
        before_logged = float(engine.split_outputs(load_model("tiny-llama")[0], task_batch,
                                                   reduction=reduction).batch_nll)
    before = engine.mean_nll(load_model("tiny-llama")[0], task_batch)
    run = engine.run(cfg, progress=False)
    after_model = load_model(str(checkpoints(run / "checkpoints")[-1]))[0]
    after = engine.mean_nll(after_model, task_batch)
    assert after > before + 1e-4
    train = open_record(run / "train.nc")
    assert train.nll_forget.values[0] == pytest.approx(before_logged, rel=1e-5)
    if reduction == "sequence":
        assert before_logged == pytest.approx(before, rel=1e-12)


def test_record_holds_config_terms_and_steps(tmp_path):
    cfg = tiny_cfg(tmp_path, method="graddiff", hparams={"alpha": 0.5})
    run = engine.run(cfg, progress=False)
    ds = open_record(run / "train.nc")
    assert ds.step.values.tolist() == [0, 1, 2]
    assert RunConfig.from_json(ds.attrs["config"]) == cfg
    assert RunConfig.from_json((run / "config.json").read_text()) == cfg
    # the GradDiff total is GA + alpha * retain NLL, term by term
    ga, rt = ds.loss_term.sel(term="ga"), ds.loss_term.sel(term="retain_nll")
    xr.testing.assert_allclose(ds.loss, ga + 0.5 * rt)


@register("_nan_at_step_2")
@dataclass(frozen=True)
class NanAtStep2:
    calls: list = field(default_factory=list)
    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out):
        self.calls.append(1)
        nll = out["forget"].nll.mean()
        return Loss(total=nll * (float("nan") if len(self.calls) == 3 else -1.0),
                    terms={"forget_nll": nll})


def test_nan_loss_stops_with_readable_record_and_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, method="_nan_at_step_2", steps=5)
    with pytest.raises(engine.DivergedError, match="diverged at step 2: the objective is nan"):
        engine.run(cfg, progress=False)
    run = tmp_path / "run"
    assert open_record(run / "train.nc").step.values.tolist() == [0, 1]
    (ckpt,) = checkpoints(run / "checkpoints")
    assert ckpt.name == "step-000002"
    model = load_model(str(ckpt))[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path):
    straight = engine.run(tiny_cfg(tmp_path, method="sga", steps=4, out=str(tmp_path / "a")), progress=False)
    half = tiny_cfg(tmp_path, method="sga", steps=2, checkpoint_every=1, out=str(tmp_path / "b"))
    engine.run(half, progress=False)
    resumed = engine.run(tiny_cfg(tmp_path, method="sga", steps=4, checkpoint_every=1,
                                  out=str(tmp_path / "b")), progress=False)
    a = load_model(str(checkpoints(straight / "checkpoints")[-1]))[0].state_dict()
    b = load_model(str(checkpoints(resumed / "checkpoints")[-1]))[0].state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    xr.testing.assert_allclose(open_record(straight / "train.nc").loss,
                               open_record(resumed / "train.nc").loss, rtol=1e-5)


def test_resume_with_another_config_is_refused(tmp_path):
    engine.run(tiny_cfg(tmp_path, method="ga", steps=1), progress=False)
    with pytest.raises(ValueError, match="another config"):
        engine.run(tiny_cfg(tmp_path, method="ga", steps=2, lr=1.0), progress=False)


def test_reference_model_is_loaded_only_when_needed(tmp_path, monkeypatch):
    calls = []

    def spy(name, **kw):
        calls.append(name)
        return load_model(name, **kw)

    monkeypatch.setattr(engine, "load_model", spy)
    engine.run(tiny_cfg(tmp_path, method="graddiff", steps=1, out=str(tmp_path / "nll")), progress=False)
    assert len(calls) == 1                                   # the policy model only
    engine.run(tiny_cfg(tmp_path, method="graddiff", hparams={"retain": "kl"}, steps=1,
                        out=str(tmp_path / "kl")), progress=False)
    assert len(calls) == 3                                   # policy + reference


def test_geffects_are_recorded_during_training(tmp_path):
    from geffect.schema import validate

    cfg = tiny_cfg(tmp_path, method="sga", geffect_every=1, probe_forget=4, probe_retain=4, steps=2)
    run = engine.run(cfg, progress=False)
    ds = xr.open_dataset(run / "geffect.nc").load()
    validate(ds)
    assert ds.step.values.tolist() == [0, 1]
    assert ds.sizes["instance"] == 8 and set(ds.split.values) == {"forget", "retain"}
    assert {"geffect", "geffect_instance", "geffect_pointwise", "r_star", "cosine_ga_sga"} <= set(ds)
    # point-wise G-effects (each instance's own objective) weighted by the instances' weights
    # in the step's loss add up to the aggregate one (issue 11: was the plain sum of the
    # contributions, which is now geffect_pointwise * sample_weight)
    assert ds.attrs["pointwise"] == "instance_objective" and ds.attrs["risk_reduction"] == "token"
    xr.testing.assert_allclose((ds.geffect_pointwise * ds.sample_weight).sum("sample"), ds.geffect,
                               rtol=1e-6)


def test_cli_rejects_unknown_method_and_foreign_hyperparameters(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown method 'gaa'"):
        cli(["unlearn", "--method", "gaa", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="method 'ga' takes"):
        cli(["unlearn", "--method", "ga", "--smoothing-rate", "0.5", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="unknown tofu split 'forget3'"):
        cli(["unlearn", "--method", "ga", "--forget-split", "forget3", "--out", str(tmp_path / "x")])


def test_eval_every_writes_the_summary_per_step(tmp_path):
    from unlearning.evaluation import evaluate

    cfg = tiny_cfg(tmp_path, method="ga", steps=2, eval_every=2, eval_max_instances=2)
    run = engine.run(cfg, progress=False)
    ev = open_record(run / "eval.nc", kind="eval")
    assert ev.step.values.tolist() == [0, 2]                       # before training, then every 2
    assert ev.attrs["method"] == "ga" and RunConfig.from_json(ev.attrs["config"]) == cfg
    # the step-0 evaluation is the untrained model's
    model, tok = load_model("tiny-llama")
    fresh = evaluate(model, tok, "tofu", forget_split="forget01", max_instances=2, step=0,
                     progress=False)
    xr.testing.assert_allclose(ev.nll.sel(step=0), fresh.nll.sel(step=0), rtol=1e-5)
    f = ev.summary.sel(metric="forget_Q_A_Prob")
    assert f.sel(step=2) < f.sel(step=0)                            # GA lowered forget probability


METHODS = sorted(m for m in __import__("unlearning.objectives", fromlist=["REGISTRY"]).REGISTRY
                 if not m.startswith("_"))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_from_the_cli_with_geffects(tmp_path, method):
    """`geffect unlearn --method M --geffect-every 1` on a tiny model: a valid, openable record."""
    out = tmp_path / method
    cli(["unlearn", "--method", method, "--model", "tiny-llama", "--forget-split", "forget01",
         "--retain-split", "retain99[:16]", "--n-forget", "4", "--steps", "2", "--batch-size", "2",
         "--max-length", "256", "--lr", "1e-3", "--geffect-every", "1", "--probe-forget", "2",
         "--probe-retain", "2", "--out", str(out)])
    train = open_record(out / "train.nc", kind="train")
    assert train.step.values.tolist() == [0, 1] and bool(train.loss.notnull().all())
    ge = xr.open_dataset(out / "geffect.nc")                        # plain xarray opens it too
    ge.load().close()
    open_record(out / "geffect.nc")                                 # and it follows the schema
    assert ge.attrs["method"] == method and ge.step.values.tolist() == [0, 1]
    assert bool(ge.geffect.notnull().all()) and bool(ge.geffect_instance.notnull().all())
    # the record's G-effect is the inner product with the gradient the optimizer used
    assert float(ge.grad_sq_norm.sum("group")[0]) > 0
    if method in ("sga",):
        assert bool(ge.r_star.notnull().all())
