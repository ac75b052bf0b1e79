"""Turn a `Recorder`'s tensors into the step's xr.Dataset (schema in SCHEMA.md).

Also the GA-vs-SGA divergence (SGA, arXiv:2510.22376): the Gram of g_f (gradient of the mean
forget NLL) and gbar (gradient of the mean normal-row NLL) per group, the cosine and norm ratio
between grad L_GA = -g_f and the step's objective gradient, and r* in closed form
(`geffect.divergence`).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from .divergence import CONVENTIONS, r_star
from .risk import answer_counts, check_answers, row_risk
from .schema import GRAM_SPLITS, make_attrs
from .uses import directions


def per_group(rec, a: dict[int, Tensor], b: dict[int, Tensor], b_uses: dict | None = None
              ) -> np.ndarray:
    """(G,) sum over each group's trainable parameters of <a, b>; a tied matrix gives
    <a, b through use u> to each use group u (`b_uses`: its explicit parts, see
    `geffect.uses`; None: the whole <a, b> to its first use group)."""
    out = np.zeros(len(rec.table))
    for _, p in rec.params:
        key, groups = id(p), rec.table.tied.get(id(p))
        if groups is None or b_uses is None:
            out[rec.table.group_of(p)] += float((a[key] * b[key]).sum())
            continue
        dirs, cols = directions(b[key], b_uses.get(key, {}), groups)  # (U, *shape)
        for d, gi in zip(dirs, cols):
            out[gi] += float((a[key] * d).sum())
    return out


def _samples(ids: list[str], pw: Tensor, weights) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sum rows that share an id (in order of first appearance) and divide by the instance's
    weight: (S, P, G) PG-effects and (S,) weights (1 without weights)."""
    order = list(dict.fromkeys(ids))
    index = torch.tensor([order.index(i) for i in ids])              # (rows,)
    out = torch.zeros(len(order), *pw.shape[1:], dtype=pw.dtype)     # (S, P, G)
    out.index_add_(0, index, pw)
    if weights is None:
        return order, out.numpy(), np.ones(len(order))
    w = np.full(len(order), np.nan)                                  # (S,)
    for i, wi in zip(ids, weights):
        s = order.index(i)
        if not np.isnan(w[s]) and not np.isclose(w[s], wi, rtol=1e-12, atol=0):
            raise ValueError(f"sample {i!r}: its rows carry different weights ({w[s]} and "
                             f"{wi}); one instance needs one weight")
        w[s] = wi
    if (w == 0).any():
        raise ValueError(f"samples {[order[s] for s in np.flatnonzero(w == 0)]} have weight "
                         f"0: their own objective is not recoverable from the step's")
    return order, out.numpy() / w[:, None, None], w


def assemble(rec, step: int, grad_l, inst: Tensor, risk: Tensor, ge: np.ndarray,
             rsq: np.ndarray, pw) -> xr.Dataset:
    """The step's record. ge, rsq: (P, G) <grad L, grad R_p> and ||grad R_p||^2 per group;
    pw: (rows, P, G) point-wise G-effects or None (an objective that owned its update)."""
    probes = list(rec.probes)
    n_g = len(rec.table)
    ids, split, n_tok = [], [], []
    for p in probes:
        batch = rec.probes[p]
        ids += [str(i) for i in batch["instance_id"]]
        split += [p] * len(batch["instance_id"])
        n_tok += answer_counts(batch["labels"]).tolist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"probe instance_ids must be unique across probes; found duplicates "
                         f"{sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    if pw is None:
        samples, pw_np = [""], np.full((1, len(probes), n_g), np.nan)       # (1, P, G)
        weight = np.full(1, np.nan)
    else:
        samples, pw_np, weight = _samples(rec._ids, pw, rec._weights)
    fallback = rec.fallback_groups
    measured = np.array(["functional" if g in fallback else "kernel"
                         for g in rec.table.names], dtype=object)
    coords = {"step": ("step", np.array([step], dtype=np.int64)),
              "probe": ("probe", np.array(probes, dtype=object)),
              "instance": ("instance", np.arange(len(ids), dtype=np.int64)),
              "instance_id": ("instance", np.array(ids, dtype=object)),
              "split": ("instance", np.array(split, dtype=object)),
              "n_tokens": ("instance", np.array(n_tok, dtype=np.int64)),
              "sample": ("sample", np.arange(len(samples), dtype=np.int64)),
              "measured_by": ("group", measured), **rec.table.coords()}
    a = dict(rec.attrs)
    model_name = a.pop("model", getattr(getattr(rec.model, "config", None), "name_or_path", "")
                       or type(rec.model).__name__)
    attrs = make_attrs(config=a.pop("config", None), model=model_name,
                       method=a.pop("method", "unknown"), risk_reduction=rec.reduction,
                       fallback_groups=fallback,
                       pointwise=("contribution" if pw is None or rec._weights is None
                                  else "instance_objective"), **a)
    return xr.Dataset(
        {"geffect": (("step", "probe", "group"), ge[None]),
         "geffect_instance": (("step", "instance", "group"), inst.numpy()[None]),
         "geffect_pointwise": (("step", "sample", "probe", "group"), pw_np[None]),
         "sample_id": (("step", "sample"), np.array([samples], dtype=object)),
         "sample_weight": (("step", "sample"), weight[None]),
         "risk": (("step", "instance"), risk.numpy()[None]),
         "objective_loss": (("step",), np.array([rec._loss])),
         "grad_sq_norm": (("step", "group"),
                          per_group(rec, grad_l, grad_l, rec._gl_uses)[None]),
         "risk_grad_sq_norm": (("step", "probe", "group"), rsq[None])},
        coords=coords, attrs=attrs)


def _mean_nll_grad(rec, batch: Mapping, where: str, weights: Tensor | None = None
                   ) -> dict[int, Tensor]:
    """Gradient of the mean row NLL, or of sum_b weights_b * NLL_b when weights are given."""
    check_answers(batch["labels"], where)
    with torch.enable_grad():
        out = rec.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        r = row_risk(out.logits, batch["labels"])                    # (B,)
        loss = r.mean() if weights is None else (r * weights.to(r.dtype)).sum()
        grads = torch.autograd.grad(loss, [p for _, p in rec.params], allow_unused=True)
    return {id(p): (g if g is not None else torch.zeros_like(p))
            for (_, p), g in zip(rec.params, grads)}


def _group_weights(batches: Mapping, k: int) -> tuple[Tensor, Tensor]:
    """Under loss_reduction "token", SGA weighs group g by n_g / N (its forget row's answer
    tokens): g_f = grad sum_g w_g ell_g (the pooled forget NLL) and gbar = grad sum_g w_g
    mean_k ell_gk, so grad L_SGA = -w_f g_f +- w_n (K-1) gbar as under row means."""
    n = check_answers(batches["forget"]["labels"], "divergence forget").double()   # (B,)
    w = n / n.sum()                                                  # (B,)
    return w, w.repeat_interleave(k - 1) / (k - 1)                   # (B,), (B*(K-1),)


def _sga_params(sga, n_f: int, n_n: int) -> tuple[int, str]:
    get = (sga.get if isinstance(sga, Mapping) else (lambda k, d=None: getattr(sga, k, d))) \
        if sga is not None else (lambda k, d=None: d)
    k = get("k", None)
    if k is None:
        if n_f == 0 or n_n % n_f:
            raise ValueError(f"divergence: expected K-1 normal rows per forget row; found "
                             f"{n_n} normal rows for {n_f} forget rows")
        k = n_n // n_f + 1
    conv = get("convention", "gls")
    if conv not in CONVENTIONS:
        raise ValueError(f"divergence: convention must be one of {CONVENTIONS}, got {conv!r}")
    return int(k), conv


def divergence(rec, step: int, grad_l, batches: Mapping, sga=None) -> xr.Dataset:
    missing = {"forget", "normal"} - set(batches)
    if missing:
        raise ValueError(f"divergence: expected batches 'forget' and 'normal', missing "
                         f"{sorted(missing)}")
    k, conv = _sga_params(sga, len(batches["forget"]["input_ids"]),
                          len(batches["normal"]["input_ids"]))
    get = sga.get if isinstance(sga, Mapping) else (lambda key, d=None: getattr(sga, key, d))
    reduction = get("loss_reduction", "sequence") if sga is not None else "sequence"
    if reduction not in ("token", "sequence"):
        raise ValueError(f"divergence: loss_reduction must be 'token' or 'sequence', got "
                         f"{reduction!r}")
    w_f, w_n = _group_weights(batches, k) if reduction == "token" else (None, None)
    g_f = _mean_nll_grad(rec, batches["forget"], "divergence forget", w_f)
    g_n = _mean_nll_grad(rec, batches["normal"], "divergence normal", w_n)
    gff, gfn, gnn = (per_group(rec, x, y) for x, y in ((g_f, g_f), (g_f, g_n), (g_n, g_n)))
    gll = per_group(rec, grad_l, grad_l)                           # ||grad L_SGA||^2
    glf = per_group(rec, grad_l, g_f)                              # <grad L_SGA, g_f>
    gram = np.stack([np.stack([gff, gfn], -1), np.stack([gfn, gnn], -1)], -2)  # (G, 2, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = -glf / np.sqrt(gff * gll)                             # GA direction is -g_f
        ratio = np.sqrt(gll / gff)
    tot = gram.sum(0)                                               # (2, 2)
    return xr.Dataset(
        {"gram": (("step", "group", "split_a", "split_b"), gram[None]),
         "cosine_ga_sga": (("step", "group"), cos[None]),
         "norm_ratio_ga_sga": (("step", "group"), ratio[None]),
         "r_star": (("step",), np.array([r_star(tot[0, 0], tot[0, 1], tot[1, 1], k, conv)])),
         "r_star_group": (("step", "group"), r_star(gff, gfn, gnn, k, conv)[None])},
        coords={"step": ("step", np.array([step], dtype=np.int64)),
                "group": ("group", np.array(rec.table.names, dtype=object)),
                "split_a": ("split_a", np.array(GRAM_SPLITS, dtype=object)),
                "split_b": ("split_b", np.array(GRAM_SPLITS, dtype=object))},
        attrs={"sga_k": k, "r_star_convention": conv, "sga_loss_reduction": reduction})
