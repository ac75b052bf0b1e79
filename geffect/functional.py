"""The torch.func path: per-module fallback (forward-mode) and whole-model vmap oracles.

1. `module_rows`: for a module without a kernel, <G, grad_n theta> for every row n equals
   b_n . (J_n G), the output's directional derivative in direction G dotted with the output's
   backprop b_n: one batched `torch.func.jvp` per direction, no per-row gradient formed.
2. `risk_grads` / `row_vjp_grads`: per-row gradients of the whole model with `vmap(grad)` /
   `vmap(vjp)`, following the torch.func per-sample-gradients tutorial. Memory grows with
   N x n_params, so these are oracles and benchmark entry (d), not the production path.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vjp, vmap

from .risk import row_risk


def rerun_kwargs(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    """The call's keyword inputs for re-running it: a key/value cache the call filled (a
    decoder block's `past_key_values`) is dropped, or the re-run would append to it again.
    A cache that held earlier tokens (an incremental decoding step) cannot be replayed."""
    out = dict(kwargs)
    x = args[0] if args and isinstance(args[0], Tensor) else None
    for k, v in kwargs.items():
        if hasattr(v, "get_seq_length") and hasattr(v, "update"):   # a transformers Cache
            t = x.shape[1] if x is not None and x.ndim >= 2 else None
            if t is None or v.get_seq_length() > t:
                raise ValueError(f"torch.func fallback: {type(module).__name__} was called with "
                                 f"a {type(v).__name__} holding {v.get_seq_length()} tokens; "
                                 f"expected a fresh cache (a full forward), found earlier tokens")
            out[k] = None
    return out


def module_rows(module: nn.Module, args: tuple, kwargs: dict, b: Tensor,
                g: dict[str, Tensor], out_index: int | None = None,
                sets: list[tuple[str, ...]] | None = None) -> dict[str, Tensor]:
    """(N, D) <G_d, grad_n theta> for each set of parameters theta of `module` named in `g`.

    Args:
        module: any module whose output (or its element `out_index`) has rows along dim 0.
        args, kwargs: the inputs it was called with (keyword-only inputs included).
        b: (N, ...) gradient of the loss with respect to that output.
        g: parameter name relative to `module` (own, or of a submodule: "experts.down_proj")
            -> (D, *shape) directions.
        out_index: the element of a tuple output that `b` belongs to; None for a tensor.
        sets: parameters measured together (one jvp per direction for the whole set, their
            inner products summed); default: each parameter alone.

    Returns:
        first name of each set -> (N, D).
    """
    params = dict(module.named_parameters())
    kwargs = rerun_kwargs(module, args, kwargs)
    out = {}
    for names in sets or [(k,) for k in g]:
        def f(*ps, names=names):
            y = functional_call(module, dict(zip(names, ps)), args, kwargs)
            return y[out_index] if out_index is not None else y     # jvp takes tensors only

        primals = tuple(params[k].detach() for k in names)
        cols = []
        for d in range(g[names[0]].shape[0]):
            with torch.no_grad():
                _, ty = torch.func.jvp(f, primals, tuple(g[k][d] for k in names))
            if not isinstance(ty, Tensor):
                raise TypeError(f"torch.func fallback: {type(module).__name__} returned "
                                f"{type(ty).__name__}; expected a tensor (or a tuple and "
                                f"out_index)")
            cols.append((b * ty).reshape(b.shape[0], -1).sum(1))   # (N,)
        out[names[0]] = torch.stack(cols, 1)                        # (N, D)
    return out


def _params(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def risk_grads(model: nn.Module, batch: Mapping) -> dict[str, Tensor]:
    """Per-instance gradients of R_n (mean token NLL of row n): name -> (N, *shape)."""
    def r(p, ids, mask, labels):
        out = functional_call(model, p, (), {"input_ids": ids[None], "attention_mask": mask[None]})
        return row_risk(out.logits, labels[None])[0]

    return vmap(grad(r), in_dims=(None, 0, 0, 0))(
        _params(model), batch["input_ids"], batch["attention_mask"], batch["labels"])


def row_vjp_grads(model: nn.Module, batch: Mapping, cotangent: Tensor) -> dict[str, Tensor]:
    """Per-row gradients J_n^T u_n of a loss that depends on the logits only.

    Args:
        cotangent: (N, T, V) dL/dlogits of the full-batch loss; row n's slice is u_n.
    """
    def row(p, ids, mask, u):
        def logits(q):
            return functional_call(model, q, (), {"input_ids": ids[None],
                                                  "attention_mask": mask[None]}).logits[0]
        _, pull = vjp(logits, p)
        return pull(u)[0]

    return vmap(row, in_dims=(None, 0, 0, 0))(
        _params(model), batch["input_ids"], batch["attention_mask"], cotangent)


def contract(per_row: dict[str, Tensor], directions: dict[str, Tensor], table,
             model: nn.Module) -> Tensor:
    """(N, n_groups): sum over each group's parameter uses of <direction, per-row gradient>
    (per-use or per-parameter keys, as `reference.pairs`)."""
    from .reference import pairs

    ref = next(iter(per_row.values()))
    n = ref.shape[0]
    out = torch.zeros(n, len(table), dtype=ref.dtype)              # (N, G)
    for gi, rows, d in pairs(table, model, per_row, directions):
        out[:, gi] += rows.reshape(n, -1) @ d.reshape(-1)           # (N,)
    return out
