"""The slow, obviously correct oracle: one `torch.autograd.grad` per instance.

Opacus' reference per-example loop, applied to the G-effect (Wang et al., ICLR 2025,
Definition 1): per probe instance, grad R_i by its own backward; per objective row s, grad L(s)
by a backward in which every other row's logits are detached, so only row s's forward carries
gradient. Nothing is clever here; tests compare the hooks path against it.

Tied weights are split by use (SCHEMA.md) the obvious way: `split_uses` gives every use but the
first its own copy of the matrix, so autograd returns one gradient per use, keyed by the use's
name (`lm_head.weight` next to `model.embed_tokens.weight`); their sum is the tied gradient.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .risk import row_risk


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


@contextmanager
def split_uses(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every use of a tied matrix but the first holds its own copy (same
    values, same `requires_grad`), so gradients come back per use; restored on exit."""
    seen, swapped = set(), []
    for path, module in model.named_modules(remove_duplicate=False):
        for k, p in list(module.named_parameters(recurse=False)):
            if id(p) in seen:
                swapped.append((module, k, p))
                setattr(module, k, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
            seen.add(id(p))
    try:
        yield model
    finally:
        for module, k, p in swapped:
            setattr(module, k, p)


def _uses(model: nn.Module) -> list[tuple[str, str, str, str]]:
    """(use name, canonical name, module path, own name) of every parameter use."""
    canon = {id(p): n for n, p in model.named_parameters()}
    out = []
    for u, p in model.named_parameters(remove_duplicate=False):
        mod, _, own = u.rpartition(".")
        out.append((u, canon[id(p)], mod, own))
    return out


def pairs(table, model: nn.Module, a: Mapping, b: Mapping) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(group, a_u, b_u) per parameter use u. A dict keyed by use names (from `split_uses`)
    gives each use its part; one keyed by parameter names gives the full gradient to each use.
    With neither split, each parameter counts once, in its first use's group."""
    rows = _uses(model)
    canon = {c for _, c, _, _ in rows}
    a_use, b_use = any(k not in canon for k in a), any(k not in canon for k in b)
    for u, c, mod, own in rows:
        if not (a_use or b_use) and u != c:
            continue
        av, bv = (a.get(u) if a_use else a.get(c)), (b.get(u) if b_use else b.get(c))
        if av is not None and bv is not None:
            yield table.use_group(mod, own), av, bv


def to_full(model: nn.Module, g: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-use gradients summed into per-parameter ones (names as `named_parameters`)."""
    out: dict[str, Tensor] = {}
    for u, c, _, _ in _uses(model):
        if u in g:
            out[c] = out[c] + g[u] if c in out else g[u]
    return out


def grad_of(model: nn.Module, scalar: Tensor) -> dict[str, Tensor]:
    """name -> d scalar / d param (zeros for unused parameters)."""
    named = _trainable(model)
    grads = torch.autograd.grad(scalar, [p for _, p in named], allow_unused=True,
                                retain_graph=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(named, grads)}


def per_group(table, model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """(G,) sum over each group's parameter uses of <a, b> (see `pairs`)."""
    ref = next(iter(a.values()))
    out = torch.zeros(len(table), dtype=ref.dtype)                  # (G,)
    for gi, av, bv in pairs(table, model, a, b):
        out[gi] += (av * bv).sum()
    return out


def _logits(model: nn.Module, batch: Mapping) -> Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def risk_grad(model: nn.Module, batch: Mapping, reduction: str = "mean") -> dict[str, Tensor]:
    """Gradient of the aggregate probe risk, per use: mean or sum over instances of R_i, or
    "token": HF's causal-LM loss (`transformers.loss.loss_utils.ForCausalLMLoss`: one
    cross-entropy "mean" over every answer token of the batch), here without its float32 upcast."""
    with split_uses(model):
        if reduction == "token":
            lg = _logits(model, batch)[:, :-1]                      # (N, T-1, V)
            lb = batch["labels"][:, 1:]                             # (N, T-1)
            return grad_of(model, F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1),
                                                  ignore_index=-100))
        r = row_risk(_logits(model, batch), batch["labels"])        # (N,)
        return grad_of(model, r.mean() if reduction == "mean" else r.sum())


def loss_grad(model: nn.Module, batches: Sequence[Mapping],
              loss_fn: Callable[[list[Tensor]], Tensor]) -> dict[str, Tensor]:
    """Gradient of the objective over its forward calls, per use."""
    with split_uses(model):
        return grad_of(model, loss_fn([_logits(model, b) for b in batches]))


def instance_objective_geffects(model: nn.Module, table, losses: Sequence[Callable[[], Tensor]],
                                directions: Sequence[Mapping[str, Tensor]]) -> Tensor:
    """(S, D, G) the paper's PG-effects <grad L_s, direction_d>, one backward per instance.
    grad L_s is the whole gradient (per parameter); a per-use direction (`risk_grad`) gives
    each use group <grad L_s, grad^(u) R> (SCHEMA.md, *Tied weights*).

    Args:
        losses: per objective instance s, a function that runs the model on that instance's
            rows ALONE and returns its own objective L_s (e.g. GA on a batch of one row).
        directions: fixed gradients (e.g. grad R_forget, grad R_retain).
    """
    rows = []
    for loss_fn in losses:
        # the FULL gradient of L_s (SCHEMA.md: only the second factor, the direction, is split
        # by use); with the uses shared, a tied matrix's gradient sums all its uses, whether
        # loss_fn runs the model or reads logits of an earlier forward
        g = grad_of(model, loss_fn())
        rows.append(torch.stack([per_group(table, model, g, d) for d in directions]))
    return torch.stack(rows)                                        # (S, D, G)


def instance_geffects(model: nn.Module, table, batch: Mapping,
                      grad_l: Mapping[str, Tensor]) -> Tensor:
    """(N, G) <grad L, grad R_i> for every instance i, one backward per instance."""
    with split_uses(model):
        r = row_risk(_logits(model, batch), batch["labels"])        # (N,)
        grads = [grad_of(model, r[i]) for i in range(r.shape[0])]
    return torch.stack([per_group(table, model, grad_l, g) for g in grads])  # (N, G)


def pointwise_geffects(model: nn.Module, table, batches: Sequence[Mapping],
                       loss_fn: Callable[[list[Tensor]], Tensor],
                       directions: Sequence[Mapping[str, Tensor]]) -> Tensor:
    """(rows, D, G) <grad L(s), direction_d> for every row s of every forward.

    Args:
        batches: the batches of the objective's forward calls, in order.
        loss_fn: maps the list of their logits to the scalar objective.
        directions: fixed gradients (e.g. grad R_forget, grad R_retain).
    """
    rows = []
    full = [_logits(model, b) for b in batches]                     # one graph, kept
    for f, batch in enumerate(batches):
        for s in range(batch["input_ids"].shape[0]):
            keep = torch.zeros(full[f].shape[0], 1, 1, dtype=torch.bool)
            keep[s] = True
            logits = [torch.where(keep, lg, lg.detach()) if i == f else lg.detach()
                      for i, lg in enumerate(full)]                 # only row s carries grad
            g = to_full(model, grad_of(model, loss_fn(logits)))
            rows.append(torch.stack([per_group(table, model, g, d) for d in directions]))
    return torch.stack(rows)                                        # (rows, D, G)
