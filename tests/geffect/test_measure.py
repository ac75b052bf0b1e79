"""The hooks path (Recorder) against the slow loop (reference.py) and torch.func (vmap), float64.

Tiny Llama and GPT-2 models, tied and untied, padded batches, both instance directions, mean-
and sum-reduced risks; tolerance 1e-10 (Llama's eager attention softmax still runs in float32,
which leaves ~1e-12 noise between mathematically equal orderings).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geffect import Recorder, functional, param_groups, reference
from geffect.risk import row_risk
from unlearning.models import tiny_model

from .conftest import MODELS, make_batch

TOL = 1e-10


def _objective(b1, b2):
    """GA on b1 plus 0.5 x retain NLL on b2: two forward calls, coupled rows (means)."""
    def loss_fn(logits):
        return -row_risk(logits[0], b1["labels"]).mean() + 0.5 * row_risk(logits[1],
                                                                           b2["labels"]).mean()
    return loss_fn


def _run(model, probes, b1, b2, ids, reduction="mean", **kw):
    loss_fn = _objective(b1, b2)
    with Recorder(model, probes, reduction=reduction, **kw) as rec:
        logits = [model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                  for b in (b1, b2)]
        loss = loss_fn(logits)
        rec.backward(loss, sample_ids=ids)
        ds = rec.measure(step=3)
    return ds, loss_fn, rec.table


def _setup(name, seed=0):
    model = tiny_model(name, seed=seed + 1, dtype=torch.float64)
    probes = {"forget": make_batch(3, seed=seed + 1, prefix="f"),
              "retain": make_batch(4, seed=seed + 2, prefix="r")}
    b1, b2 = make_batch(3, seed=seed + 3, prefix="a"), make_batch(2, 7, seed=seed + 4, prefix="b")
    return model, probes, b1, b2


@pytest.mark.parametrize("reduction", ["mean", "sum", "token"])
@pytest.mark.parametrize("name", MODELS)
def test_hooks_match_reference_loop(name, reduction):
    model, probes, b1, b2 = _setup(name)
    ids = ["s0", "s1", "s2", "s3", "s0"]                 # row 4 (2nd forward) joins s0
    ds, loss_fn, table = _run(model, probes, b1, b2, ids, reduction)
    grad_l = {n: p.grad.clone() for n, p in model.named_parameters()}
    inst = torch.cat([reference.instance_geffects(model, table, probes[p], grad_l)
                      for p in probes])                                          # (I, G)
    np.testing.assert_allclose(ds.geffect_instance.values[0], inst.numpy(), rtol=0, atol=TOL)
    dirs = [reference.risk_grad(model, probes[p], reduction) for p in probes]
    ge = torch.stack([reference.per_group(table, model, grad_l, d) for d in dirs])  # (P, G)
    np.testing.assert_allclose(ds.geffect.values[0], ge.numpy(), rtol=0, atol=TOL)
    pw = reference.pointwise_geffects(model, table, [b1, b2], loss_fn, dirs)     # (5, P, G)
    pw = torch.stack([pw[0] + pw[4], pw[1], pw[2], pw[3]])                       # by sample id
    np.testing.assert_allclose(ds.geffect_pointwise.values[0], pw.numpy(), rtol=0, atol=TOL)
    assert list(ds.sample_id.values[0]) == ["s0", "s1", "s2", "s3"]
    sq = reference.per_group(table, model, grad_l, reference.loss_grad(model, [b1, b2], loss_fn))
    np.testing.assert_allclose(ds.grad_sq_norm.values[0], sq.numpy(), rtol=1e-12)
    risks = torch.cat([row_risk(model(input_ids=b["input_ids"],
                                      attention_mask=b["attention_mask"]).logits, b["labels"])
                       for b in probes.values()])
    np.testing.assert_allclose(ds.risk.values[0], risks.detach().numpy(), rtol=1e-12)
    assert ds.attrs["risk_reduction"] == reduction and ds.attrs["fallback_groups"] == "[]"
    with torch.no_grad():
        value = float(loss_fn([
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            for b in (b1, b2)]))
    assert abs(ds.objective_loss.item() - value) < 1e-12


@pytest.mark.parametrize("name", ["tiny-llama-tied", "tiny-gpt2"])
def test_sums_over_instances_and_samples(name):
    model, probes, b1, b2 = _setup(name, seed=5)
    ds, _, _ = _run(model, probes, b1, b2, [f"s{i}" for i in range(5)])
    for p in ("forget", "retain"):
        by_inst = ds.geffect_instance.where(ds.split == p).mean("instance")
        np.testing.assert_allclose(by_inst.values, ds.geffect.sel(probe=p).values, atol=TOL)
    np.testing.assert_allclose(ds.geffect_pointwise.sum("sample").values, ds.geffect.values,
                               atol=TOL)
    assert ds.geffect.sum("group").shape == (1, 2)
    assert ds.n_tokens.values.tolist() == [int((b["labels"][i, 1:] != -100).sum())
                                           for b in probes.values()
                                           for i in range(b["labels"].shape[0])]


@pytest.mark.parametrize("name", MODELS)
def test_torch_func_vmap_agrees(name):
    model, probes, b1, b2 = _setup(name, seed=2)
    ds, loss_fn, table = _run(model, probes, b1, b2, [f"s{i}" for i in range(5)])
    grad_l = {n: p.grad.clone() for n, p in model.named_parameters()}
    with reference.split_uses(model):                       # per-use rows of a tied matrix
        per_row = [functional.risk_grads(model, probes[p]) for p in probes]
    inst = torch.cat([functional.contract(r, grad_l, table, model) for r in per_row])  # (I, G)
    np.testing.assert_allclose(ds.geffect_instance.values[0], inst.numpy(), atol=TOL)
    # point-wise: per-row vjp of each forward with that forward's slice of dL/dlogits
    logits = [model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
              for b in (b1, b2)]
    cot = torch.autograd.grad(loss_fn(logits), logits)
    dirs = [reference.risk_grad(model, probes[p]) for p in probes]
    rows = []
    for b, c in zip((b1, b2), cot):
        per_row = functional.row_vjp_grads(model, b, c)
        rows.append(torch.stack([functional.contract(per_row, d, table, model) for d in dirs], 1))
    np.testing.assert_allclose(ds.geffect_pointwise.values[0], torch.cat(rows).numpy(), atol=TOL)


@pytest.mark.parametrize("name", ["tiny-llama-tied", "tiny-gpt2"])
def test_fallback_path_agrees_and_is_listed(name):
    model, probes, b1, b2 = _setup(name, seed=3)
    ids = [f"s{i}" for i in range(5)]
    fast, _, table = _run(model, probes, b1, b2, ids)
    model.zero_grad(set_to_none=True)
    every = [n for n, m in model.named_modules() if list(m.parameters(recurse=False))]
    slow, _, _ = _run(model, probes, b1, b2, ids, fallback=every)
    for v in ("geffect", "geffect_instance", "geffect_pointwise"):
        np.testing.assert_allclose(slow[v].values, fast[v].values, atol=TOL)
    assert sorted(eval(slow.attrs["fallback_groups"].replace("null", "None"))) == \
        sorted(table.names)
    assert set(slow.measured_by.values) == {"functional"}
    assert set(fast.measured_by.values) == {"kernel"}


def test_probe_chunks_give_the_same_record():
    model, probes, b1, b2 = _setup("tiny-gpt2-untied", seed=4)
    ids = [f"s{i}" for i in range(5)]
    whole, _, _ = _run(model, probes, b1, b2, ids, probe_chunk=None)
    model.zero_grad(set_to_none=True)
    chunked, _, _ = _run(model, probes, b1, b2, ids, probe_chunk=2)
    for v in ("geffect", "geffect_instance", "geffect_pointwise", "risk", "risk_grad_sq_norm"):
        np.testing.assert_allclose(chunked[v].values, whole[v].values, atol=TOL)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_grad_after_recorder_equals_plain_backward(name):
    model, probes, b1, b2 = _setup(name)
    _run(model, probes, b1, b2, [f"s{i}" for i in range(5)])
    hooked = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss_fn = _objective(b1, b2)
    loss_fn([model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
             for b in (b1, b2)]).backward()
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, hooked[n]), f"{n}: .grad differs from a plain backward"


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_hooks_removed_after_exit_and_after_exception():
    model, probes, b1, b2 = _setup("tiny-llama")
    before = _n_hooks(model)
    _run(model, probes, b1, b2, [f"s{i}" for i in range(5)])
    assert _n_hooks(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with Recorder(model, probes):
            model(input_ids=b1["input_ids"], attention_mask=b1["attention_mask"])
            assert _n_hooks(model) > before
            raise RuntimeError("boom")
    assert _n_hooks(model) == before
    with pytest.raises(ValueError, match="expected one id per captured row"):
        with Recorder(model, probes) as rec:
            out = model(input_ids=b1["input_ids"], attention_mask=b1["attention_mask"])
            rec.backward(out.logits.sum(), sample_ids=["only-one"])
    assert _n_hooks(model) == before
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_owned_update_gives_nan_pointwise_and_keeps_grad():
    model, probes, b1, _ = _setup("tiny-gpt2")
    with Recorder(model, probes) as rec:
        out = model(input_ids=b1["input_ids"], attention_mask=b1["attention_mask"])
        loss = -row_risk(out.logits, b1["labels"]).mean()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        for p, g in zip(model.parameters(), grads):           # the objective writes .grad
            p.grad = 2 * g
        rec.backward(None)
        ds = rec.measure(step=0)
    assert np.isnan(ds.geffect_pointwise.values).all()
    assert list(ds.sample_id.values[0]) == [""]
    table = param_groups(model)
    grad_l = {n: p.grad for n, p in model.named_parameters()}
    ref = reference.instance_geffects(model, table, probes["forget"], grad_l)
    np.testing.assert_allclose(ds.geffect_instance.values[0, :3], ref.numpy(), atol=TOL)


def test_frozen_parameters_count_as_zero():
    model, probes, b1, b2 = _setup("tiny-llama")
    for p in model.model.embed_tokens.parameters():
        p.requires_grad_(False)
    ds, loss_fn, table = _run(model, probes, b1, b2, [f"s{i}" for i in range(5)])
    emb = ds.sel(group="model.embed_tokens")
    assert float(abs(emb.geffect).max()) == 0 and float(abs(emb.geffect_instance).max()) == 0
    grad_l = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    inst = torch.cat([reference.instance_geffects(model, table, probes[p], grad_l)
                      for p in probes])
    np.testing.assert_allclose(ds.geffect_instance.values[0], inst.numpy(), atol=TOL)
