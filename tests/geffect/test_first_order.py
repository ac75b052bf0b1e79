"""First-order meaning of the G-effect: an SGD step of size eta changes R by about -eta * e.

Central differences: (R(theta + eta g) - R(theta - eta g)) / (2 eta) = <grad R, g> + O(eta^2),
for the aggregate risk, for single probe instances and for single groups (perturbing only that
group's parameters). GPT-2 is float64 throughout; Llama's eager softmax runs in float32, so its
tolerance is looser.
"""
from __future__ import annotations

import pytest
import torch

from geffect import Recorder, reference
from geffect.risk import row_risk
from unlearning.models import tiny_model

from .conftest import make_batch


def _risks(model, batch):
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return row_risk(out.logits, batch["labels"])                # (N,)


def _shifted(model, grads, eta, only=None):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if (only is None or n in only) and n in grads:
                p.add_(grads[n], alpha=eta)


@pytest.mark.parametrize("name, eta, rtol", [("tiny-gpt2", 1e-6, 1e-6),
                                             ("tiny-gpt2-untied", 1e-6, 1e-6),
                                             ("tiny-llama-tied", 3e-4, 1e-3)])
def test_central_difference_matches_geffect(name, eta, rtol):
    model = tiny_model(name, seed=3, dtype=torch.float64)
    probes = {"forget": make_batch(3, seed=7, prefix="f"), "retain": make_batch(3, seed=8,
                                                                              prefix="r")}
    train = probes["forget"]                                   # GA on the forget probe itself
    with Recorder(model, probes) as rec:
        out = model(input_ids=train["input_ids"], attention_mask=train["attention_mask"])
        rec.backward(-row_risk(out.logits, train["labels"]).mean())   # gradient ascent
        ds = rec.measure(step=0)
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    canon = {id(q): n for n, q in model.named_parameters()}
    g = {u: g[canon[id(q)]] for u, q in model.named_parameters(remove_duplicate=False)}
    groups = {gname: [f"{m}.{k}" for m, k, gi in rec.table.uses if rec.table.names[gi] == gname]
              for gname in rec.table.names}
    # a tied matrix's use groups (embedding, LM head): perturb that use's own copy
    with reference.split_uses(model):
        _check_slopes(model, probes, ds, rec, g, groups, eta, rtol)
    _check_sgd_reading(model, probes, ds, g, eta)


def _check_slopes(model, probes, ds, rec, g, groups, eta, rtol):
    for p, batch in probes.items():
        e = ds.geffect_instance.values[0][ds.split.values == p]            # (N, G)
        for gname in (None, *rec.table.names[:2], rec.table.names[-1]):
            only = None if gname is None else set(groups[gname])
            _shifted(model, g, -eta, only)
            r_minus = _risks(model, batch)
            _shifted(model, g, 2 * eta, only)
            r_plus = _risks(model, batch)
            _shifted(model, g, -eta, only)
            slope = (r_plus - r_minus) / (2 * eta)                         # (N,) ~ <grad R_i, g>
            want = e.sum(1) if gname is None else e[:, rec.table.names.index(gname)]
            torch.testing.assert_close(slope, torch.as_tensor(want), rtol=rtol, atol=1e-9)
            if gname is None:                                              # aggregate (mean) R
                agg = ds.geffect.sel(probe=p).sum("group").item()
                assert abs(float(slope.mean()) - agg) <= rtol * abs(agg) + 1e-9


def _check_sgd_reading(model, probes, ds, g, eta):
    """One step of size eta along -g changes R by about -eta * e."""
    r0, e_f = _risks(model, probes["forget"]).mean(), ds.geffect.sel(probe="forget").sum().item()
    _shifted(model, g, -eta)
    change = float(_risks(model, probes["forget"]).mean() - r0)
    assert abs(change + eta * e_f) <= 1e-2 * abs(eta * e_f)
    # GA on the probe itself: grad L = -grad R_forget, so e = -||grad R_forget||^2 < 0
    sq = ds.risk_grad_sq_norm.sel(probe="forget").sum().item()
    assert e_f < 0 and abs(e_f + sq) <= 1e-10 * sq
