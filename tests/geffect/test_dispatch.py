"""Kernel dispatch that cannot be fooled: a kernel applies only to the forward it was derived
for; subclasses that override `forward` go to torch.func (and the record says so), unless
registered; a module nobody can measure raises an error naming it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers.models.gemma.modeling_gemma import GemmaTextScaledWordEmbedding

from geffect import Recorder, kernels, param_groups, reference
from geffect.risk import row_risk

from .conftest import make_batch


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return 3.0 * super().forward(x)


class ScaledEmbedding(nn.Embedding):
    def forward(self, ids):
        return super().forward(ids) * 2.0


class KwargsOnly(nn.Module):
    """Keyword-only input and a tuple output, like an HF block."""

    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def forward(self, *, hidden):
        return hidden * self.w, None


class Tiny(nn.Module):
    """A causal-LM-shaped toy: embedding, one block of custom modules, head."""

    def __init__(self, emb=ScaledEmbedding, lin=ScaledLinear, d=6, v=260):
        super().__init__()
        self.embed = emb(v, d)
        self.layers = nn.ModuleList([nn.ModuleDict({"mlp": lin(d, d), "mix": KwargsOnly(d)})])
        self.head = nn.Linear(d, v)

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)                                   # (N, T, d)
        h = h + torch.tanh(self.layers[0]["mlp"](h))
        h = self.layers[0]["mix"](hidden=h)[0]
        return type("Out", (), {"logits": self.head(h)})


def _record(model, **kw):
    probes = {"forget": make_batch(3, seed=1, prefix="f"), "retain": make_batch(2, seed=2,
                                                                              prefix="r")}
    train = make_batch(2, seed=3, prefix="t")
    with Recorder(model, probes, **kw) as rec:
        out = model(input_ids=train["input_ids"], attention_mask=train["attention_mask"])
        rec.backward(-row_risk(out.logits, train["labels"]).mean())
        ds = rec.measure(step=0)
    return ds, probes


def _check_against_reference(model, ds, probes):
    table = param_groups(model)
    grad_l = {n: p.grad.clone() for n, p in model.named_parameters()}
    inst = torch.cat([reference.instance_geffects(model, table, probes[p], grad_l)
                      for p in probes])
    np.testing.assert_allclose(ds.geffect_instance.values[0], inst.numpy(), rtol=0, atol=1e-12)


def test_overridden_forwards_fall_back_and_are_listed():
    torch.manual_seed(0)
    model = Tiny().double()
    assert kernels.kind_of(model.layers[0]["mlp"]) is None          # subclass: not a Linear
    assert kernels.kind_of(model.embed) is None
    assert kernels.kind_of(model.head) == "linear"
    ds, probes = _record(model)
    by = dict(zip(ds.group.values, ds.measured_by.values))
    assert by == {"embed": "functional", "layers.0.mlp": "functional",
                  "layers.0.mix": "functional", "head": "kernel"}
    assert sorted(eval(ds.attrs["fallback_groups"])) == ["embed", "layers.0.mix",
                                                          "layers.0.mlp"]
    _check_against_reference(model, ds, probes)


def test_instance_level_forward_patch_falls_back():
    lin = nn.Linear(3, 3)
    lin.forward = lambda x: 2 * nn.Linear.forward(lin, x)
    assert kernels.kind_of(lin) is None


class PlainLinear(nn.Linear):
    """Overrides forward with the same map, y = x W^T + b: a kernel may be registered for it."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


def test_registered_subclass_uses_its_kernel(monkeypatch):
    torch.manual_seed(0)
    model = Tiny(emb=nn.Embedding, lin=PlainLinear).double()
    ds, probes = _record(model)
    assert ds.measured_by.sel(group="layers.0.mlp").item() == "functional"
    _check_against_reference(model, ds, probes)
    monkeypatch.setattr(kernels, "REGISTRY", dict(kernels.REGISTRY))
    kernels.register(PlainLinear.forward, "linear")
    model.zero_grad(set_to_none=True)
    ds2, _ = _record(model)
    assert ds2.measured_by.sel(group="layers.0.mlp").item() == "kernel"
    _check_against_reference(model, ds2, probes)
    np.testing.assert_allclose(ds2.geffect_pointwise.values, ds.geffect_pointwise.values,
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="kernel kind must be one of"):
        kernels.register(PlainLinear.forward, "conv2d")


def test_scaled_embedding_kernel_matches_per_row_gradients():
    """Gemma's y = E[x] * embed_scale: its registered kernel against explicit per-row grads."""
    torch.manual_seed(0)
    emb = GemmaTextScaledWordEmbedding(7, 3, padding_idx=2, embed_scale=3.0 ** 0.5).double()
    assert kernels.kind_of(emb) == "scaled_embedding"
    ids = torch.tensor([[1, 2, 2, 5], [2, 0, 1, 1]])
    b = torch.randn(2, 4, 3, dtype=torch.float64)
    g = {"weight": torch.randn(2, 7, 3, dtype=torch.float64)}
    got = kernels.rows_inner("scaled_embedding", emb, ids, b, g)["weight"]   # (N, D)
    for n in range(2):
        (gr,) = torch.autograd.grad((emb(ids[n:n + 1]) * b[n:n + 1]).sum(), [emb.weight])
        want = torch.stack([(gr * g["weight"][d]).sum() for d in range(2)])
        torch.testing.assert_close(got[n], want, rtol=0, atol=1e-12)


def test_unmeasurable_module_raises_naming_it():
    class Pooled(nn.Module):                                        # rows mixed into (d,)
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(6))

        def forward(self, h):
            return h.mean(0) * self.w                               # (T, d): no rows

    class Bad(Tiny):
        def __init__(self):
            super().__init__(emb=nn.Embedding, lin=nn.Linear)
            self.pool = Pooled()

        def forward(self, input_ids, attention_mask=None):
            h = self.embed(input_ids) + self.pool(self.embed(input_ids))
            return type("Out", (), {"logits": self.head(h)})

    with pytest.raises(ValueError, match=r"module pool \(Pooled\) returned"):
        _record(Bad().double())
