"""The slow, obviously correct oracle: one `torch.autograd.grad` per instance.

Opacus' reference per-example loop, applied to the G-effect (Wang et al., ICLR 2025,
Definition 1): per probe instance, grad R_i by its own backward; per objective row s, grad L(s)
by a backward in which every other row's logits are detached, so only row s's forward carries
gradient. Nothing is clever here; tests compare the hooks path against it.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .risk import row_risk


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def grad_of(model: nn.Module, scalar: Tensor) -> dict[str, Tensor]:
    """name -> d scalar / d param (zeros for unused parameters)."""
    named = _trainable(model)
    grads = torch.autograd.grad(scalar, [p for _, p in named], allow_unused=True,
                                retain_graph=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(named, grads)}


def per_group(table, model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """(G,) sum over each group's parameters of <a, b>."""
    params = dict(model.named_parameters())
    ref = next(iter(a.values()))
    out = torch.zeros(len(table), dtype=ref.dtype)                  # (G,)
    for name in a:
        out[table.group_of(params[name])] += (a[name] * b[name]).sum()
    return out


def _logits(model: nn.Module, batch: Mapping) -> Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def risk_grad(model: nn.Module, batch: Mapping, reduction: str = "mean") -> dict[str, Tensor]:
    """Gradient of the aggregate probe risk: mean or sum over instances of R_i, or "token":
    HF's causal-LM loss (`transformers.loss.loss_utils.ForCausalLMLoss`: one cross-entropy
    "mean" over every answer token of the batch), here without its float32 upcast."""
    if reduction == "token":
        lg = _logits(model, batch)[:, :-1]                          # (N, T-1, V)
        lb = batch["labels"][:, 1:]                                 # (N, T-1)
        return grad_of(model, F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1),
                                              ignore_index=-100))
    r = row_risk(_logits(model, batch), batch["labels"])            # (N,)
    return grad_of(model, r.mean() if reduction == "mean" else r.sum())


def instance_objective_geffects(model: nn.Module, table, losses: Sequence[Callable[[], Tensor]],
                                directions: Sequence[Mapping[str, Tensor]]) -> Tensor:
    """(S, D, G) the paper's PG-effects <grad L_s, direction_d>, one backward per instance.

    Args:
        losses: per objective instance s, a function that runs the model on that instance's
            rows ALONE and returns its own objective L_s (e.g. GA on a batch of one row).
        directions: fixed gradients (e.g. grad R_forget, grad R_retain).
    """
    rows = []
    for loss_fn in losses:
        g = grad_of(model, loss_fn())
        rows.append(torch.stack([per_group(table, model, g, d) for d in directions]))
    return torch.stack(rows)                                        # (S, D, G)


def instance_geffects(model: nn.Module, table, batch: Mapping,
                      grad_l: Mapping[str, Tensor]) -> Tensor:
    """(N, G) <grad L, grad R_i> for every instance i, one backward per instance."""
    r = row_risk(_logits(model, batch), batch["labels"])            # (N,)
    return torch.stack([per_group(table, model, grad_l, grad_of(model, r[i]))
                        for i in range(r.shape[0])])                # (N, G)


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
    for f, batch in enumerate(batches):
        for s in range(batch["input_ids"].shape[0]):
            logits = [_logits(model, b) for b in batches]
            keep = torch.zeros(logits[f].shape[0], 1, 1, dtype=torch.bool)
            keep[s] = True
            logits = [torch.where(keep, lg, lg.detach()) if i == f else lg.detach()
                      for i, lg in enumerate(logits)]               # only row s carries grad
            g = grad_of(model, loss_fn(logits))
            rows.append(torch.stack([per_group(table, model, g, d) for d in directions]))
    return torch.stack(rows)                                        # (rows, D, G)
