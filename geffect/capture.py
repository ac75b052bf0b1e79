"""Temporary hooks that hand each module call's (inputs, output backprop) to a callback.

Forward hooks (one per module that owns trainable parameters) record the call's inputs and
register a hook on the output tensor; when autograd computes the gradient of that output (the
backprop b), the callback receives the call and b. Nothing is stored on modules or parameters,
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
    """One call of one hooked module during a captured forward."""

    name: str
    module: nn.Module
    forward: int                       # index of the root forward call it belongs to
    args: tuple
    kwargs: dict = field(default_factory=dict)
    b: Tensor | None = None            # gradient of the loss w.r.t. the output, (N, ...)
    dense: dict | None = None          # per-row gradients formed at backprop time (norms)
    live: "Live | None" = None         # set when `b` is stored compacted to its live tokens

    @property
    def n_rows(self) -> int:
        if self.live is not None:
            return self.live.n
        return self.b.shape[0] if self.b is not None else self.args[0].shape[0]


def _rows_of(args: tuple, kwargs: dict) -> int | None:
    for key in ("input_ids", "inputs_embeds"):
        if kwargs.get(key) is not None:
            return kwargs[key].shape[0]
    if args and isinstance(args[0], Tensor):
        return args[0].shape[0]
    return None


class Capture:
    """Context manager: hooks on `modules` (name -> module) under the root `model`.

    Attributes:
        on_backprop: callback(call, b) run when a hooked output's gradient is computed; may be
            swapped between passes.
        active: when False the hooks record nothing (used while re-running modules).
        forward_rows: rows of each captured root forward call, in order.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module],
                 on_backprop: Callable[[Call, Tensor], None], expand: set[str] = frozenset()):
        self.model, self.modules, self.on_backprop = model, modules, on_backprop
        self.expand = expand
        self.active = True
        self.forward_rows: list[int] = []
        self._handles: list = []

    def __enter__(self) -> "Capture":
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._root, with_kwargs=True))
            for name, module in self.modules.items():
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

    def _hook(self, name: str):
        def hook(module, args, kwargs, output):
            if not self._recording() or not self.forward_rows:
                return None
            if not isinstance(output, Tensor):
                raise TypeError(f"geffect hooks: module {name} ({type(module).__name__}) returned "
                                f"{type(output).__name__}; expected one tensor")
            if not output.requires_grad:
                return None
            rows = self.forward_rows[-1]
            if name in self.expand and output.shape[0] == 1 and rows > 1:
                output = output.expand(rows, *output.shape[1:])    # (N, ...) view, same values
            call = Call(name, module, len(self.forward_rows) - 1, args, kwargs)
            output.register_hook(lambda g, c=call: self.on_backprop(c, g))
            return output
        return hook
