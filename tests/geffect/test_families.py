"""Every causal-LM family named in issue 13, float64, against the slow reference loop.

Left-padded and right-padded batches of unequal lengths, two objective forwards with coupled
rows, both probe directions. Risk reduction "sum": with "mean" the HF norms' float32 round
trip rounds (b / N) instead of b, a 1e-9 difference between equal quantities (the hooks path
scales after the backward); "mean" itself is checked on Llama and GPT-2 in test_measure.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import masking_utils

from geffect import reference
from geffect.risk import row_risk

from .conftest import make_batch
from .families import FAMILIES, family_model
from .test_measure import _run

TOL = 1e-10
EAGER = {"gemma2", "bloom"}                     # no SDPA path in transformers for these


def left_pad(batch: dict) -> dict:
    """The same rows moved to the right end (left padding)."""
    out, n = dict(batch), batch["attention_mask"].sum(1)
    for key, fill in (("input_ids", 256), ("attention_mask", 0), ("labels", -100)):
        x = torch.full_like(batch[key], fill)                       # (N, T)
        for i, length in enumerate(n.tolist()):
            x[i, x.shape[1] - length:] = batch[key][i, :length]
        out[key] = x
    return out


@pytest.fixture
def finite_eager_mask(monkeypatch):
    """Eager attention in float64 masks with finfo(float64).min, which its float32 softmax
    turns into -inf: a left-padded row's padding queries then give NaN. Build the mask in
    float32 (a finite -3.4e38) instead; the model's arithmetic is otherwise unchanged."""
    eager = masking_utils.AttentionMaskInterface._global_mapping["eager"]

    def mask(*args, dtype=torch.float32, **kwargs):
        return eager(*args, dtype=torch.float32 if dtype == torch.float64 else dtype, **kwargs)

    monkeypatch.setitem(masking_utils.AttentionMaskInterface._global_mapping, "eager", mask)


def _gemma_norm(self, x):
    """Gemma's (1 + w) RMSNorm without its float32 round trip (float64 stays float64); still
    not a registered forward, so the torch.func fallback measures it."""
    return self._norm(x) * (1.0 + self.weight)                      # (N, T, d)


@pytest.fixture
def exact_gemma_norms(monkeypatch):
    from transformers.models.gemma import modeling_gemma
    from transformers.models.gemma2 import modeling_gemma2
    from transformers.models.gemma3 import modeling_gemma3

    for cls in (modeling_gemma.GemmaRMSNorm, modeling_gemma2.Gemma2RMSNorm,
                modeling_gemma3.Gemma3RMSNorm):
        monkeypatch.setattr(cls, "forward", _gemma_norm)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_matches_reference_loop(name, finite_eager_mask, exact_gemma_norms):
    model = family_model(name, seed=1, attn="eager" if name in EAGER else "sdpa")
    probes = {"forget": left_pad(make_batch(3, seed=2, prefix="f")),
              "retain": make_batch(2, seed=3, prefix="r")}
    b1, b2 = left_pad(make_batch(2, seed=4, prefix="a")), make_batch(2, 7, seed=5, prefix="b")
    ds, loss_fn, table = _run(model, probes, b1, b2, ["s0", "s1", "s2", "s0"], "sum")
    assert "other" not in set(ds.component.values), f"{name}: unlabelled groups"
    assert {"embed", "lm_head", "attn", "mlp"} <= set(ds.component.values)
    grad_l = {n: p.grad.clone() for n, p in model.named_parameters()}
    dirs = [reference.risk_grad(model, probes[p], "sum") for p in probes]
    want = {
        "geffect_instance": torch.cat([reference.instance_geffects(model, table, probes[p],
                                                                   grad_l) for p in probes]),
        "geffect": torch.stack([reference.per_group(table, model, grad_l, d) for d in dirs]),
        "risk_grad_sq_norm": torch.stack([reference.per_group(
            table, model, reference.to_full(model, d), d) for d in dirs]),
        "grad_sq_norm": reference.per_group(table, model, grad_l,
                                            reference.loss_grad(model, [b1, b2], loss_fn)),
    }
    pw = reference.pointwise_geffects(model, table, [b1, b2], loss_fn, dirs)   # (4, P, G)
    want["geffect_pointwise"] = torch.stack([pw[0] + pw[3], pw[1], pw[2]])     # by sample id
    with torch.no_grad():
        want["risk"] = torch.cat([row_risk(model(input_ids=b["input_ids"],
                                                 attention_mask=b["attention_mask"]).logits,
                                           b["labels"]) for b in probes.values()])
    for var, w in want.items():
        got = ds[var].values[0]
        assert np.isfinite(got).all(), f"{name} {var}: not finite"
        np.testing.assert_allclose(got, w.numpy(), rtol=0, atol=TOL, err_msg=f"{name} {var}")
