"""Point-wise G-effects as the paper defines them (PG-effect: the instance's own objective
against the risk), checked against a brute-force loop that runs each instance ALONE, and the
token-pooled risk against HF's own `outputs.loss`. float64 tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geffect import Recorder, reference
from unlearning.engine import split_outputs
from unlearning.models import tiny_model
from unlearning.objectives import SplitOutputs, build

from .conftest import make_batch

TOL = 1e-10


def _rows(out: SplitOutputs, rows: slice) -> SplitOutputs:
    """The objective's view of some rows ALONE (a batch of just them). The rows come from the
    padded batch's forward, so the forward numbers are those of the step (Llama's eager
    attention softmax runs in float32, so a separate unpadded forward differs by ~1e-7)."""
    return SplitOutputs(logits=out.logits[rows], labels=out.labels[rows],
                        reduction=out.reduction)


def _measure(model, probes, batches, objective, reduction, risk="mean"):
    with Recorder(model, probes, reduction=risk) as rec:
        outs = {s: split_outputs(model, batches[s], reduction=reduction) for s in objective.splits}
        loss = objective(outs)
        ids = [i for s in objective.splits for i in batches[s]["instance_id"]]
        weights = [float(w) for s in objective.splits for w in loss.weights[s]]
        rec.backward(loss.total, sample_ids=ids, weights=weights)
        ds = rec.measure(step=0)
    return ds, loss


@pytest.mark.parametrize("method,reduction,risk", [
    ("ga", "token", "token"), ("ga", "sequence", "mean"), ("graddiff", "token", "mean"),
    ("wga", "sequence", "token"), ("wga", "token", "token")])
def test_pointwise_is_the_instance_objective_and_weights_recover_geffect(method,
                                                                         reduction, risk):
    model = tiny_model("tiny-llama", seed=3, dtype=torch.float64)
    probes = {"forget": make_batch(3, seed=11, prefix="f"), "retain": make_batch(2, seed=12,
                                                                                  prefix="r")}
    batches = {"forget": make_batch(3, 9, seed=13, prefix="a"),
               "retain": make_batch(2, 8, seed=14, prefix="b")}
    objective = build(method)
    ds, loss = _measure(model, probes, batches, objective, reduction, risk)
    grad_l = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    dirs = [reference.risk_grad(model, probes[p], risk) for p in probes]
    # brute force: each instance's own objective, computed on that instance alone; for a
    # retain row of GradDiff that is its retain NLL (its own term), weighted by alpha
    own = []
    for s in objective.splits:
        full = split_outputs(model, batches[s], reduction=reduction)
        for i in range(len(batches[s]["instance_id"])):
            one = _rows(full, slice(i, i + 1))
            if s == "retain":
                own.append(lambda one=one: build("retain_nll")({"retain": one}).total)
            else:
                term = build("ga" if method == "graddiff" else method)
                own.append(lambda one=one, term=term: term({"forget": one}).total)
    table = Recorder(model, probes).table
    pg = reference.instance_objective_geffects(model, table, own, dirs)           # (S, P, G)
    np.testing.assert_allclose(ds.geffect_pointwise.values[0], pg.detach().numpy(), rtol=0,
                               atol=TOL)
    # weights: n_s / N (token) or 1/B (sequence), times alpha = 1 on retain rows
    expect = []
    for s in objective.splits:
        n = (batches[s]["labels"][:, 1:] != -100).sum(-1).double()
        expect += (n / n.sum() if reduction == "token" else torch.full_like(n, 1 / len(n))).tolist()
    np.testing.assert_allclose(ds.sample_weight.values[0], expect, rtol=1e-14)
    weighted = (ds.geffect_pointwise * ds.sample_weight).sum("sample")
    np.testing.assert_allclose(weighted.values, ds.geffect.values, rtol=0, atol=TOL)
    ge = torch.stack([reference.per_group(table, model, grad_l, d) for d in dirs])
    np.testing.assert_allclose(ds.geffect.values[0], ge.numpy(), rtol=0, atol=TOL)
    assert ds.attrs["pointwise"] == "instance_objective" and ds.attrs["risk_reduction"] == risk


def test_sga_group_is_one_instance_with_one_weight():
    """SGA's instance is a forget row and its K-1 normal rows; under `token` it weighs n_f/N."""
    model = tiny_model("tiny-gpt2", seed=4, dtype=torch.float64)
    probes = {"forget": make_batch(2, seed=21, prefix="f")}
    forget = make_batch(2, 9, seed=22, prefix="g")
    normal = make_batch(4, 8, seed=23, prefix="n")
    normal["instance_id"] = ["g0", "g0", "g1", "g1"]
    batches = {"forget": forget, "normal": normal}
    sga = build("sga", r=0.5, k=3)
    ds, _ = _measure(model, probes, batches, sga, "token")
    dirs = [reference.risk_grad(model, probes["forget"])]
    own = []
    f_all, n_all = (split_outputs(model, b, reduction="token") for b in (forget, normal))
    for g in range(2):
        f1, n1 = _rows(f_all, slice(g, g + 1)), _rows(n_all, slice(2 * g, 2 * g + 2))
        own.append(lambda f1=f1, n1=n1: sga({"forget": f1, "normal": n1}).total)
    table = Recorder(model, probes).table
    pg = reference.instance_objective_geffects(model, table, own, dirs)
    np.testing.assert_allclose(ds.geffect_pointwise.values[0], pg.detach().numpy(), atol=TOL)
    n = (forget["labels"][:, 1:] != -100).sum(-1).double()
    np.testing.assert_allclose(ds.sample_weight.values[0], (n / n.sum()).numpy(), rtol=1e-14)
    np.testing.assert_allclose((ds.geffect_pointwise * ds.sample_weight).sum("sample").values,
                               ds.geffect.values, atol=TOL)


def test_without_weights_pointwise_is_the_contribution():
    model = tiny_model("tiny-llama", seed=5, dtype=torch.float64)
    probes = {"forget": make_batch(2, seed=31, prefix="f")}
    batch = make_batch(3, seed=32, prefix="a")
    with Recorder(model, probes) as rec:
        loss = build("ga")({"forget": split_outputs(model, batch)})
        rec.backward(loss.total, sample_ids=batch["instance_id"])
        ds = rec.measure(step=0)
    assert (ds.sample_weight.values == 1).all() and ds.attrs["pointwise"] == "contribution"
    np.testing.assert_allclose(ds.geffect_pointwise.sum("sample").values, ds.geffect.values,
                               atol=TOL)
    with Recorder(model, probes) as rec:
        loss = build("ga")({"forget": split_outputs(model, batch)})
        with pytest.raises(ValueError, match="one weight per captured row"):
            rec.backward(loss.total, sample_ids=batch["instance_id"], weights=[1.0])
