"""Temporary hooks that hand each module call's (inputs, output backprop) to a callback.

Forward hooks (on each module that owns trainable parameters, and on their ancestors) record
the call's inputs and register a hook on each differentiable output tensor (tuple outputs:
each element); when autograd computes the gradient of that output (the backprop b), the
callback receives the call and b. Nothing is stored on modules or parameters,
and every handle is removed in `finally` (TransformerLens' `hooks()` context manager idea).

Broadcast outputs (GPT-2's position embedding is looked up once, (1, T, d), and added to every
row) are expanded to the forward's row count so that their backprop stays per row; the values
the model computes are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn


class Live:
    """Where a compacted backprop's rows came from: flat token index (M,) into N x T."""

    def __init__(self, idx: Tensor, n: int, t: int):
        self.idx, self.n, self.t = idx, n, t

    @property
    def rows(self) -> Tensor:
        return self.idx // self.t                                   # (M,)


@dataclass
class Call:
    """One call of one hooked module during a captured forward (one differentiable output)."""

    name: str
    module: nn.Module
    forward: int                       # index of the root forward call it belongs to
    args: tuple
    kwargs: dict = field(default_factory=dict)
    b: Tensor | None = None            # gradient of the loss w.r.t. the output, (N, ...)
    dense: dict | None = None          # per-row gradients formed at backprop time (norms)
    live: "Live | None" = None         # set when `b` is stored compacted to its live tokens
    covers: tuple[str, ...] = ()       # measured modules whose parameters this call measures
    out_index: int | None = None       # which element of a tuple output `b` belongs to

    @property
    def n_rows(self) -> int:
        if self.live is not None:
            return self.live.n
        return self.b.shape[0] if self.b is not None else self.input.shape[0]

    @property
    def input(self) -> Tensor:
        """The module's first input (positional, else the first keyword tensor)."""
        if self.args:
            return self.args[0]
        return next(v for v in self.kwargs.values() if isinstance(v, Tensor))


def _rows_of(args: tuple, kwargs: dict) -> int | None:
    for key in ("input_ids", "inputs_embeds"):
        if kwargs.get(key) is not None:
            return kwargs[key].shape[0]
    if args and isinstance(args[0], Tensor):
        return args[0].shape[0]
    return None


def _per_row(out: Tensor, rows: int) -> bool:
    """Whether dim 0 of a module output indexes the forward's rows: (N, T, ...) tensors do;
    2-D (tokens, d) tensors (MoE routers and experts on flattened or routed tokens) do not."""
    return out.ndim >= 3 and out.shape[0] == rows


class Capture:
    """Context manager: hooks on `modules` (name -> module) under the root `model`.

    A module whose differentiable outputs are not per row (`_per_row`) hands its parameters to
    the nearest enclosing module that is (its "unit", e.g. an MoE block for its router and
    experts), decided at its first call and kept; `Call.covers` lists the measured modules a
    call stands for. If no enclosing module below the root is per row, the hook raises an error
    naming the module.

    Attributes:
        on_backprop: callback(call, b) run when a hooked output's gradient is computed; may be
            swapped between passes.
        active: when False the hooks record nothing (used while re-running modules).
        forward_rows: rows of each captured root forward call, in order.
        delegate: measured module -> the enclosing module that measures it (only those moved).
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module],
                 on_backprop: Callable[[Call, Tensor], None], expand: set[str] = frozenset()):
        self.model, self.modules, self.on_backprop = model, modules, on_backprop
        self.expand = expand
        self.active = True
        self.forward_rows: list[int] = []
        self.delegate: dict[str, str] = {}
        self._covers: dict[str, tuple[str, ...]] = {n: (n,) for n in modules}
        self._handles: list = []
        self._seen: set[str] = set()                                 # measured here at least once
        self._hooked = {n: m for n, m in model.named_modules() if n and (
            n in modules or any(k.startswith(n + ".") for k in modules))}

    def __enter__(self) -> "Capture":
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._root, with_kwargs=True))
            for name, module in self._hooked.items():
                self._handles.append(module.register_forward_hook(self._hook(name),
                                                                  with_kwargs=True))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook handle (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def _recording(self) -> bool:
        return self.active and torch.is_grad_enabled()

    def _root(self, module, args, kwargs):
        if self._recording():
            rows = _rows_of(args, kwargs)
            if rows is None:
                raise ValueError("captured forward: expected input_ids or inputs_embeds (or a "
                                 "tensor first argument) to count rows; found none")
            self.forward_rows.append(rows)

    def _move_up(self, name: str, module: nn.Module, found: str) -> None:
        """Hand the parameters `name` measures to its nearest hooked ancestor."""
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        while parent and parent not in self._hooked:
            parent = parent.rsplit(".", 1)[0] if "." in parent else ""
        if not parent:
            raise ValueError(f"geffect: module {name} ({type(module).__name__}) returned {found}; "
                             f"expected outputs with the forward's rows first, (N, T, ...), here "
                             f"or in an enclosing module below the root, to measure per instance")
        moved = self._covers.pop(name, ())
        for m in moved:
            self.delegate[m] = parent
        self._covers[parent] = self._covers.get(parent, ()) + moved

    def _hook(self, name: str):
        def hook(module, args, kwargs, output):
            if not self._recording() or not self.forward_rows:
                return None
            covers = self._covers.get(name)
            if not covers:
                return None
            rows = self.forward_rows[-1]
            many = isinstance(output, (tuple, list))
            outs = tuple(output) if many else (output,)
            diff = [(i, o) for i, o in enumerate(outs) if isinstance(o, Tensor) and o.requires_grad]
            if not many and isinstance(output, Tensor) and name in self.expand \
                    and output.ndim >= 3 and output.shape[0] == 1 and rows > 1:
                output = output.expand(rows, *output.shape[1:])    # (N, ...) view, same values
                diff = [(0, output)]
            elif not many and not isinstance(output, Tensor):
                diff = None
            if diff is None or not all(_per_row(o, rows) for _, o in diff):
                found = (type(output).__name__ if diff is None else
                         str([tuple(o.shape) for _, o in diff]))
                if name in self._seen:
                    raise ValueError(f"geffect: module {name} ({type(module).__name__}) returned "
                                     f"{found} after earlier calls with per-row outputs; its rows "
                                     f"cannot be told apart")
                self._move_up(name, module, f"{found} for {rows} rows")
                return None
            self._seen.add(name)
            for i, o in diff:
                call = Call(name, module, len(self.forward_rows) - 1, args, kwargs,
                            covers=covers, out_index=i if many else None)
                o.register_hook(lambda g, c=call: self.on_backprop(c, g))
            return None if many else output
        return hook
