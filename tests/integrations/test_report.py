"""Scalar summaries of G-effect records: values against the record and first principles, and
TensorBoard event files (read back with tensorboard's EventAccumulator) from both paths."""
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from geffect.io import open_record
from geffect.testing import fake_record
from unlearning import engine
from unlearning.cli import main as cli
from unlearning.integrations.report import Reporter, parse_report_to, scalars
from unlearning.models import load_model
from unlearning.objectives import build

from .helpers import trainer_for
from .test_trainer import tiny_cfg

TAGS = {"geffect/forget", "geffect/retain", "risk/forget", "risk/retain"}
SGA_TAGS = {"sga/cosine_ga_sga", "sga/norm_ratio_ga_sga", "sga/r_star"}


def events(logdir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the event files under `logdir`."""
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_scalars_are_the_record_summed_over_groups_bands_and_instances():
    ds = fake_record(seed=3, with_divergence=False).isel(step=[1])
    s = scalars(ds)
    one = ds.isel(step=0)
    for probe in ("forget", "retain"):
        assert s[f"geffect/{probe}"] == pytest.approx(float(one.geffect.sel(probe=probe).sum()))
        for band in set(one.band.values.tolist()):
            want = one.geffect.sel(probe=probe).values[one.band.values == band].sum()
            assert s[f"geffect/{probe}/{band}"] == pytest.approx(float(want))
        assert s[f"risk/{probe}"] == pytest.approx(float(one.risk.values[one.split.values == probe].mean()))
    assert not SGA_TAGS & set(s)
    with_div = fake_record(seed=3).isel(step=[1])
    assert scalars(with_div)["sga/r_star"] == float(with_div.r_star[0])


def test_scalars_refuse_more_than_one_step():
    with pytest.raises(ValueError, match="one step"):
        scalars(fake_record(seed=0))


def test_sga_scalars_match_gradients_formed_directly(tmp_path):
    cfg = tiny_cfg(tmp_path, method="sga", hparams={"k": 2, "r": 0.5}, steps=1)
    s = scalars(open_record(engine.run(cfg, progress=False) / "geffect.nc"))
    # oracle: flat gradients of the step's SGA objective and of the forget NLL (GA = -g_f),
    # both under the run's loss_reduction (the default "token": the forget rows' answer tokens
    # pooled, HF's outputs.loss, so g_f is the gradient of GA's own loss)
    model, tok = load_model(cfg.model, dtype=torch.float64, seed=cfg.seed)
    sga = build("sga", k=2, r=0.5)
    task = engine.build_task(tok, "tofu", "forget01", "retain99", n_forget=8, n_retain=32, k=2,
                             max_length=256, seed=0)
    batch = task.batch(0, cfg.batch_size, sga.splits, cfg.seed)
    params = list(model.parameters())

    def flat_grad(loss):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])  # (n_params,)

    g_l = flat_grad(sga({k: engine.split_outputs(model, batch[k], reduction="token")
                         for k in sga.splits}).total)
    assert cfg.loss_reduction == "token"
    g_f = flat_grad(engine.split_outputs(model, batch["forget"], reduction="token").batch_nll)
    cos = float(-(g_l @ g_f) / (g_l.norm() * g_f.norm()))
    assert s["sga/cosine_ga_sga"] == pytest.approx(cos, rel=1e-9)
    assert s["sga/norm_ratio_ga_sga"] == pytest.approx(float(g_l.norm() / g_f.norm()), rel=1e-9)


def test_geffect_unlearn_report_to_tensorboard_writes_the_record_values(tmp_path):
    run = tmp_path / "run"
    cli(["unlearn", "--method", "sga", "--k", "2", "--model", "tiny-llama", "--n-forget", "8",
         "--n-retain", "32", "--steps", "3", "--batch-size", "2", "--max-length", "256",
         "--optimizer", "sgd", "--lr", "0.3", "--dtype", "float64", "--geffect-every", "2",
         "--probe-forget", "3", "--probe-retain", "3", "--out", str(run),
         "--report-to", "tensorboard"])
    ev = events(run / "tensorboard")
    ge, train = open_record(run / "geffect.nc"), open_record(run / "train.nc")
    assert {f"train/{t}" for t in TAGS | SGA_TAGS} <= set(ev)
    for step in (0, 2):
        for tag, value in scalars(ge.sel(step=[step])).items():
            assert ev[f"train/{tag}"][step] == pytest.approx(value, rel=1e-6), tag
    assert sorted(ev["train/geffect/forget"]) == [0, 2]           # measured steps only
    np.testing.assert_allclose([ev["train/loss"][s] for s in (0, 1, 2)], train.loss.values, rtol=1e-6)


def test_trainer_report_to_tensorboard_writes_the_record_values(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    cfg = tiny_cfg(tmp_path, method="ga", steps=2)
    trainer_for(cfg, tmp_path / "hf", report_to="tensorboard").train()
    ev = events(tmp_path / "tb")
    ge = open_record(tmp_path / "hf" / "geffect.nc")
    assert {f"train/{t}" for t in TAGS} <= set(ev)
    for step in (0, 1):
        for tag, value in scalars(ge.sel(step=[step])).items():
            assert ev[f"train/{tag}"][step] == pytest.approx(value, rel=1e-6), tag


def test_report_to_names_are_checked(tmp_path):
    assert parse_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert parse_report_to("none") == [] and parse_report_to(None) == []
    with pytest.raises(ValueError, match="unknown trackers \\['tensorbord'\\]"):
        parse_report_to("tensorbord")
    for name in ("wandb", "mlflow", "trackio"):
        try:
            __import__(name)
        except ImportError:
            with pytest.raises(ValueError, match=f"needs the package '{name}'"):
                Reporter(name, tmp_path)
