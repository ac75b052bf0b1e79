"""GA-vs-SGA divergence: r* closed form vs brute-force minimisation, and the recorded Gram,
cosine, norm ratio and r* of a real SGA step (unlearning.objectives.sga) on a tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from geffect import Recorder, r_star, reference
from geffect.divergence import sga_coefficients, sga_sq_norm
from geffect.risk import row_risk
from unlearning.models import tiny_model
from unlearning.objectives import SplitOutputs, build

from .conftest import make_batch


@pytest.mark.parametrize("convention", ["gls", "split"])
@pytest.mark.parametrize("k", [2, 4, 9])
@pytest.mark.parametrize("seed", range(4))
def test_r_star_closed_form_vs_brute_force(convention, k, seed):
    rng = np.random.default_rng(seed)
    g_f, g_n = rng.standard_normal(7), rng.standard_normal(7) * rng.uniform(0.2, 3)
    gff, gfn, gnn = g_f @ g_f, g_f @ g_n, g_n @ g_n

    def norm2(r):                                  # ||grad L_SGA(r)||^2 from the definition
        w_f, w_n = 1 - r + r / k, r / k
        sign = -1.0 if convention == "gls" else 1.0
        v = -w_f * g_f + sign * w_n * (k - 1) * g_n   # sum over K-1 normal rows = (K-1) gbar
        return v @ v

    best = minimize_scalar(norm2, bracket=(-5, 5), tol=1e-12)
    assert r_star(gff, gfn, gnn, k, convention) == pytest.approx(best.x, rel=1e-6, abs=1e-8)
    grid = np.linspace(best.x - 1, best.x + 1, 2001)
    assert grid[np.argmin([norm2(r) for r in grid])] == pytest.approx(best.x, abs=1e-3)
    for r in (-0.5, 0.3, 1.0):
        assert sga_sq_norm(r, gff, gfn, gnn, k, convention) == pytest.approx(norm2(r), rel=1e-12)


def test_r_star_degenerate_and_arrays():
    assert np.isnan(r_star(1.0, 1.0, 1.0, 4, "gls"))         # g_f == gbar: norm flat in r
    out = r_star(np.array([1.0, 2.0]), np.array([0.0, 0.5]), np.array([1.0, 1.0]), 4)
    np.testing.assert_allclose(out, [4 / 3 * 0.5, 4 / 3 * 1.5 / 2.0])
    with pytest.raises(ValueError, match="convention"):
        r_star(1.0, 0.0, 1.0, 4, "bogus")


def _sga_step(model, obj, bf, bn, probes, reduction="sequence"):
    k = obj.k
    ids = list(bf["instance_id"]) + [bf["instance_id"][j // (k - 1)]
                                     for j in range(bn["input_ids"].shape[0])]
    with Recorder(model, probes) as rec:
        outs = {s: model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                for s, b in (("forget", bf), ("normal", bn))}
        split = {s: SplitOutputs(logits=o.logits[:, :-1], labels=b["labels"][:, 1:],
                                 reduction=reduction)
                 for (s, o), b in zip(outs.items(), (bf, bn))}
        loss = obj(split).total
        rec.backward(loss, sample_ids=ids)
        sga = {"k": obj.k, "convention": obj.convention, "loss_reduction": reduction}
        ds = rec.measure(step=0, divergence={"forget": bf, "normal": bn}, sga=sga)
    return ds, rec.table


@pytest.mark.parametrize("convention, r", [("gls", 0.4), ("gls", -0.5), ("split", 0.7)])
def test_recorded_divergence_of_a_real_sga_step(convention, r):
    model = tiny_model("tiny-gpt2", seed=2, dtype=torch.float64)
    k = 3
    bf, bn = make_batch(2, seed=11, prefix="f"), make_batch(4, seed=12, prefix="n")
    probes = {"forget": make_batch(2, seed=13, prefix="pf")}
    obj = build("sga", r=r, k=k, convention=convention)
    ds, table = _sga_step(model, obj, bf, bn, probes)
    assert ds.attrs["sga_k"] == k and ds.attrs["r_star_convention"] == convention
    assert ds.sizes["sample"] == 2                               # one instance per SGA group

    def mean_nll_grad(b):
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        return reference.grad_of(model, row_risk(out.logits, b["labels"]).mean())

    g_f, g_n = mean_nll_grad(bf), mean_nll_grad(bn)
    gff = reference.per_group(table, model, g_f, g_f).numpy()
    gfn = reference.per_group(table, model, g_f, g_n).numpy()
    gnn = reference.per_group(table, model, g_n, g_n).numpy()
    np.testing.assert_allclose(ds.gram.sel(split_a="forget", split_b="forget").values[0], gff,
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ds.gram.sel(split_a="forget", split_b="normal").values[0], gfn,
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ds.gram.sel(split_a="normal", split_b="normal").values[0], gnn,
                               rtol=1e-10, atol=1e-14)
    # the step's .grad is grad L_SGA: its norm and cosine follow from the Gram in closed form
    a, b = sga_coefficients(r, k, convention)
    sq = a * a * gff + 2 * a * b * gfn + b * b * gnn
    np.testing.assert_allclose(ds.norm_ratio_ga_sga.values[0], np.sqrt(sq / gff), rtol=1e-8)
    np.testing.assert_allclose(ds.cosine_ga_sga.values[0], -(a * gff + b * gfn) /
                               np.sqrt(gff * sq), rtol=1e-8)
    np.testing.assert_allclose(ds.r_star_group.values[0], r_star(gff, gfn, gnn, k, convention))

    # brute force: minimise the norm of the actual gradient of the SGA loss over r
    def grad_norm2(rate):
        w_f, w_n = 1 - rate + rate / k, rate / k
        sign = -1.0 if convention == "gls" else 1.0
        lf = row_risk(model(input_ids=bf["input_ids"],
                            attention_mask=bf["attention_mask"]).logits, bf["labels"])
        ln = row_risk(model(input_ids=bn["input_ids"],
                            attention_mask=bn["attention_mask"]).logits, bn["labels"])
        loss = (-w_f * lf + sign * w_n * ln.view(2, k - 1).sum(1)).mean()
        g = reference.grad_of(model, loss)
        return float(sum((v * v).sum() for v in g.values()))

    best = minimize_scalar(grad_norm2, bracket=(-3, 3), tol=1e-10)
    assert ds.r_star.item() == pytest.approx(best.x, rel=1e-5, abs=1e-7)
    assert grad_norm2(r) == pytest.approx(float(ds.grad_sq_norm.sum()), rel=1e-10)


def test_recorded_divergence_under_token_loss_reduction():
    """loss_reduction "token": SGA weighs group g by n_g / N; the recorded g_f is the pooled
    forget NLL's gradient and r* still minimises the actual SGA gradient norm."""
    model = tiny_model("tiny-gpt2", seed=2, dtype=torch.float64)
    k, convention = 3, "gls"
    bf, bn = make_batch(2, seed=11, prefix="f"), make_batch(4, seed=12, prefix="n")
    probes = {"forget": make_batch(2, seed=13, prefix="pf")}
    obj = build("sga", r=0.4, k=k, convention=convention)
    ds, table = _sga_step(model, obj, bf, bn, probes, reduction="token")
    assert ds.attrs["sga_loss_reduction"] == "token"
    # pooled forget NLL, the whole tied matrix's gradient: the divergence variables count a
    # tied matrix once, in its first use group (SCHEMA.md), as per_group does for per-parameter
    # gradients
    g_f = reference.to_full(model, reference.risk_grad(model, bf, "token"))
    gff = reference.per_group(table, model, g_f, g_f).numpy()
    np.testing.assert_allclose(ds.gram.sel(split_a="forget", split_b="forget").values[0], gff,
                               rtol=1e-10, atol=1e-14)
    n = (bf["labels"][:, 1:] != -100).sum(-1).double()
    w = n / n.sum()                                                 # (2,) group weights

    def grad_norm2(rate):
        w_f, w_n = 1 - rate + rate / k, rate / k
        lf = row_risk(model(input_ids=bf["input_ids"],
                            attention_mask=bf["attention_mask"]).logits, bf["labels"])
        ln = row_risk(model(input_ids=bn["input_ids"],
                            attention_mask=bn["attention_mask"]).logits, bn["labels"])
        loss = (w * (-w_f * lf - w_n * ln.view(2, k - 1).sum(1))).sum()
        g = reference.grad_of(model, loss)
        return float(sum((v * v).sum() for v in g.values()))

    assert grad_norm2(0.4) == pytest.approx(float(ds.grad_sq_norm.sum()), rel=1e-10)
    best = minimize_scalar(grad_norm2, bracket=(-3, 3), tol=1e-10)
    assert ds.r_star.item() == pytest.approx(best.x, rel=1e-5, abs=1e-7)
