"""What a step costs: forwards and backwards counted, monitoring steps, fused optimizers."""
import copy

import numpy as np
import pytest
import torch

import unlearning.engine as engine
from geffect.io import open_record
from unlearning.cli import config_from_args, parser
from unlearning.config import RunConfig
from unlearning.models import load_model, tiny_model
from unlearning.monitor import monitoring


def tiny_cfg(tmp_path, **kw) -> RunConfig:
    base = dict(model="tiny-llama", forget_split="forget01", retain_split="retain99", n_forget=8,
                n_retain=32, steps=2, batch_size=2, max_length=256, lr=1e-3, out=str(tmp_path / "run"))
    return RunConfig(**{**base, **kw})


def counted_run(cfg, monkeypatch) -> dict:
    """Run `cfg`, counting the policy model's forward calls and backward passes."""
    counts = {"forward": 0, "backward": 0, "models": 0}

    def spy(name, **kw):
        model, tok = load_model(name, **kw)
        counts["models"] += 1
        model.register_forward_pre_hook(lambda *_: counts.__setitem__("forward", counts["forward"] + 1))
        first = next(model.parameters())                 # reached once per backward pass
        first.register_post_accumulate_grad_hook(
            lambda _: counts.__setitem__("backward", counts["backward"] + 1))
        return model, tok

    monkeypatch.setattr(engine, "load_model", spy)
    engine.run(cfg, progress=False)
    return counts


def test_a_ga_step_runs_one_forward_and_one_backward_when_nothing_is_monitored(tmp_path, monkeypatch):
    counts = counted_run(tiny_cfg(tmp_path, method="ga", monitor_every=0), monkeypatch)
    assert counts == {"forward": 2, "backward": 2, "models": 1}           # 2 steps
    train = open_record(tmp_path / "run" / "train.nc")
    assert np.isfinite(train.nll_forget.values).all()                    # from the step's own forward
    assert np.isnan(train.nll_retain.values).all()


def test_a_monitoring_step_adds_one_retain_forward(tmp_path, monkeypatch):
    counts = counted_run(tiny_cfg(tmp_path, method="ga", steps=3, monitor_every=2), monkeypatch)
    assert counts == {"forward": 3 + 2, "backward": 3, "models": 1}       # steps 0 and 2 monitored
    train = open_record(tmp_path / "run" / "train.nc")
    assert np.isnan(train.nll_retain.values).tolist() == [False, True, False]
    # the logged value is the retain NLL of that step's retain batch before the update
    task = engine.build_task(load_model("tiny-llama")[1], "tofu", "forget01", "retain99",
                             n_forget=8, n_retain=32, max_length=256)
    before = engine.mean_nll(load_model("tiny-llama")[0], task.batch(0, 2, ("retain",))["retain"])
    assert train.nll_retain.values[0] == pytest.approx(before, rel=1e-6)


def test_graddiff_logs_its_retain_nll_every_step_without_extra_forwards(tmp_path, monkeypatch):
    # sequence reduction: the objective's retain term is then the mean of row NLLs, the
    # definition of the record's nll_retain (under token pooling the two differ by design)
    counts = counted_run(tiny_cfg(tmp_path, method="graddiff", steps=3, monitor_every=0,
                                  loss_reduction="sequence"), monkeypatch)
    assert counts == {"forward": 3 * 2, "backward": 3, "models": 1}
    train = open_record(tmp_path / "run" / "train.nc")
    xr_rt = train.loss_term.sel(term="retain_nll").values             # the objective's own term
    np.testing.assert_allclose(train.nll_retain.values, xr_rt, rtol=1e-6)


def test_monitoring_steps_are_every_nth_geffect_and_before_evaluation():
    cfg = RunConfig(monitor_every=4, eval_every=3)
    got = [s for s in range(10) if monitoring(cfg, s, measure=(s == 7))]
    assert got == [0, 2, 4, 5, 7, 8]        # every 4th; eval after steps 2, 5, 8; G-effect at 7
    assert [s for s in range(5) if monitoring(RunConfig(monitor_every=0), s, False)] == []


def test_the_cli_flag_sets_monitor_every():
    args = parser().parse_args(["unlearn", "--monitor-every", "3"])
    assert config_from_args(args).monitor_every == 3
    assert RunConfig().monitor_every == 10


def train_steps(optimizer: str, impl: str, steps=4) -> dict:
    """`steps` updates of a tiny float64 model with fixed pseudo-gradients."""
    model = tiny_model("tiny-llama", seed=0, dtype=torch.float64)
    cfg = RunConfig(optimizer=optimizer, lr=1e-2, weight_decay=0.1)
    opt = engine.make_optimizer(list(model.parameters()), cfg, impl=impl)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    return copy.deepcopy(model.state_dict())


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("impl", ["auto", "fused", "foreach"])
def test_fast_optimizers_match_the_single_tensor_reference(optimizer, impl):
    want = train_steps(optimizer, "single")
    got = train_steps(optimizer, impl)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-14, msg=name)


def test_auto_takes_the_fused_kernel_on_cpu_and_names_bad_choices():
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert engine.make_optimizer(p, RunConfig()).defaults["fused"] is True
    with pytest.raises(ValueError, match="unknown optimizer impl 'fast'; expected auto, fused"):
        engine.make_optimizer(p, RunConfig(), impl="fast")
    # an unknown optimizer name is refused when the config is built, before any model loads
    with pytest.raises(ValueError, match="config field 'optimizer' must be one of .*got 'adam'"):
        engine.make_optimizer(p, RunConfig(optimizer="adam"))


@pytest.mark.parametrize("max_norm", [None, 0.0, 1e-3])
def test_the_gradient_norm_is_clip_grad_norms_and_clips_only_with_a_limit(max_norm):
    from unlearning.monitor import clipped_grad_norm

    g = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in ((3, 4), (5,))]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    ref = [p.detach().clone().requires_grad_() for p in ps]
    for r, p in zip(ref, ps):
        r.grad = p.grad.clone()
    want = float(torch.nn.utils.clip_grad_norm_(ref, max_norm or float("inf")))
    assert clipped_grad_norm(ps, max_norm) == want
    for r, p in zip(ref, ps):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-15, atol=0)
