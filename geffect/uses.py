"""Tied weights split by use: the part of a gradient that flows through each module using it.

A matrix W used by modules u_1..u_k in different groups (an input embedding tied to the LM
head) has grad W = sum_u grad^(u) W, where grad^(u) is the backward through u's calls alone.
The record reports <a, grad^(u) b> for each use group u, so the uses sum to <a, grad b>
(SCHEMA.md, *Tied weights*). grad^(u) is formed explicitly for every use but the last (a
backward of the module's own call against its output backprop; for an embedding kernel, a
sparse tensor of the looked-up rows);
the last (in practice the LM head, the costly one) is the remainder grad W - sum of the others.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .functional import rerun_kwargs


def explicit_uses(table, own: dict) -> dict[str, list[tuple[str, nn.Parameter, int]]]:
    """Module name -> its (own name, parameter, use group) whose use gradient is formed
    explicitly: every use of a tied matrix except the one in its last use group."""
    last = {key: groups[-1] for key, groups in table.tied.items()}
    out = {}
    for name, items in own.items():
        ex = [(k, q, gi) for k, q, gi in items if id(q) in last and gi != last[id(q)]]
        if ex:
            out[name] = ex
    return out


def embedding_use_grad(module: nn.Module, ids: Tensor, b: Tensor, scale=None) -> Tensor:
    """The same for an embedding lookup, as a sparse (V, d) tensor (rows of the ids only)."""
    ids = ids.expand(b.shape[0], *ids.shape[1:]).reshape(-1)        # (N*T,)
    vals = b.reshape(ids.shape[0], -1)                              # (N*T, d)
    if scale is not None:
        vals = vals * scale
    if module.padding_idx is not None:
        keep = ids != module.padding_idx
        ids, vals = ids[keep], vals[keep]
    return torch.sparse_coo_tensor(ids[None], vals, module.weight.shape,
                                   check_invariants=False)         # (V, d), sparse


def use_grad(module: nn.Module, call, b: Tensor, rel: str, p: nn.Parameter) -> Tensor:
    """grad of <b, output of this call> with respect to `p` (named `rel` in `module`)."""
    leaf = p.detach().requires_grad_()
    with torch.enable_grad():
        kwargs = rerun_kwargs(module, call.args, call.kwargs)
        y = functional_call(module, {rel: leaf}, call.args, kwargs)
        if call.out_index is not None:
            y = y[call.out_index]
        if y.shape != b.shape:                                      # a broadcast (1, T, d) output
            b = b.sum(0, keepdim=True)                              # (1, T, d)
        (g,) = torch.autograd.grad(y, leaf, b, allow_unused=True)
    return g if g is not None else torch.zeros_like(p)


def accumulate(rec, call, b: Tensor, acc: dict | None) -> None:
    """Add this call's explicit use gradients to acc: id(param) -> {use group: (*shape)}."""
    if acc is None:
        return
    for m in call.covers:
        items = rec._explicit.get(m)
        if not items:
            continue
        rel = "" if m == call.name else m[len(call.name) + 1:] + "."
        was = rec._cap.active
        rec._cap.active = False                                     # re-running: record nothing
        try:
            for k, q, gi in items:
                kind = rec.kinds.get(m) if call.covers == (m,) else None
                if kind in ("embedding", "scaled_embedding"):       # sparse: the ids' rows only
                    scale = (call.module.embed_scale.to(q.dtype)
                             if kind == "scaled_embedding" else None)
                    g = embedding_use_grad(call.module, call.input, b, scale)
                else:
                    g = use_grad(call.module, call, b, rel + k, q)
                parts = acc.setdefault(id(q), {})
                parts[gi] = parts[gi] + g if gi in parts else g
        finally:
            rec._cap.active = was


def directions(total: Tensor, parts: dict[int, Tensor], groups: list[int]) -> tuple[Tensor, list]:
    """(U, *shape) the per-use gradients of a tied matrix (the last is the remainder) and
    their groups, from its full gradient `total` and the explicit `parts`."""
    out = total.new_zeros(len(groups), *total.shape)                # (U, *shape)
    out[-1] = total
    for u, gi in enumerate(groups[:-1]):
        if gi in parts:
            part = parts[gi]
            out[u] = part.to_dense() if part.is_sparse else part
            out[-1] -= out[u]
    return out, list(groups)
