"""Normalized Gradient Difference (NGDiff) with the GeN automatic learning rate.

Bu et al. 2024, "Unlearning as multi-task optimization: a normalized gradient difference
approach with an adaptive learning rate" (arXiv:2410.22086), Sec. 3. With g_F the gradient of
the forget NLL L_F and g_R that of the retain NLL L_R, the update direction is

    d = g_R / ||g_R|| - g_F / ||g_F||              (norms over all trainable parameters)

and theta <- theta - eta * d. To first order the step never raises L_R nor lowers L_F:
d . g_R = ||g_R|| (1 - cos) >= 0 and d . g_F = -||g_F|| (1 - cos) <= 0.

NGDiff changes the update rule, so it implements the engine's `OwnsUpdate` hook: `backward`
runs two `autograd.grad` calls on `loss.parts` and writes d into `.grad` (overwriting it).

The learning rate (GeN, Bu & Xu 2024, "Gradient descent with generalized Newton's method",
arXiv:2407.02772): every `phi` steps, fit a parabola to the loss along d through
L0 = L(theta), L+ = L(theta + eta d), L- = L(theta - eta d), eta the rate in use, and step to
its minimum:

    eta* = (eta / 2) * (L+ - L-) / (L+ - 2 L0 + L-).

L is this objective's total, L_R - L_F (what `loss_at` evaluates). The update is the GeN
package's (`gen-optim` 0.1.1, `GeN/GeN.py::lr_parabola`): the fit is used only when it
opens upwards (curvature L+ - 2 L0 + L- > 0) AND the loss falls along the step (eta* > 0,
its `gHg > 0 and Gg > 0`); otherwise the rate is kept. An accepted fit moves the rate by at
most a factor `max_change` = 2 and is smoothed: eta <- smooth * eta + (1 - smooth) *
clip(eta*, eta / max_change, eta * max_change), smooth = 0.9, so one update changes the rate
by -5 % to +10 %. (`smooth=0, max_change=inf` is the plain parabola step.) Defaults ours
on top: phi = 4 (the package's README: call it every >= 4 steps), and the rate clipped to
[lr_min, lr_max] = [1e-7, 1e-2] (since ||d|| <= 2, one step moves theta by at most
2 * lr_max in L2 norm). The rate holds until the next GeN step. GeN assumes the optimizer
steps along d itself (SGD); with AdamW the probed direction is not the step taken (the
package probes the optimizer's own step instead). On random tiny models the NGDiff loss is
often concave along d (the -L_F part), so GeN keeps the rate there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor

from .base import Loss, Outputs, register


def normalized_difference(g_r: list[Tensor], g_f: list[Tensor], eps: float = 1e-12) -> list[Tensor]:
    """g_R/||g_R|| - g_F/||g_F||, norms over the whole list; a zero gradient contributes 0."""
    norm_r = torch.sqrt(sum((g.double() ** 2).sum() for g in g_r)).item()
    norm_f = torch.sqrt(sum((g.double() ** 2).sum() for g in g_f)).item()
    return [r / max(norm_r, eps) - f / max(norm_f, eps) for r, f in zip(g_r, g_f)]


def gen_rate(eta: float, l0: float, l_plus: float, l_minus: float) -> float | None:
    """Minimiser of the parabola through (-eta, L+), (0, L0), (eta, L-) in the step size s of
    theta - s d (L+ = L(theta + eta d), L- = L(theta - eta d)).

    Returns None, as GeN's `lr_parabola` rejects the fit, when the curvature is not positive
    (no minimum), when the minimiser is not positive (the loss rises along the step: the
    package's `Gg > 0` test), or when a value is not finite.
    """
    curvature = l_plus - 2 * l0 + l_minus
    if not all(map(math.isfinite, (l0, l_plus, l_minus))) or not curvature > 0:
        return None
    best = 0.5 * eta * (l_plus - l_minus) / curvature
    return best if best > 0 else None


@register("ngdiff")
@dataclass(frozen=True)
class NGDiff:
    phi: int = 4
    lr_min: float = 1e-7
    lr_max: float = 1e-2
    adaptive: bool = True
    smooth: float = 0.9
    max_change: float = 2.0

    splits: ClassVar[tuple[str, ...]] = ("forget", "retain")
    needs_ref: ClassVar[bool] = False

    def __post_init__(self):
        if self.phi < 1:
            raise ValueError(f"NGDiff's GeN period phi must be >= 1, got {self.phi}")
        if not 0 < self.lr_min <= self.lr_max:
            raise ValueError(f"NGDiff needs 0 < lr_min <= lr_max, got [{self.lr_min}, {self.lr_max}]")
        if not 0 <= self.smooth < 1 or not self.max_change >= 1:
            raise ValueError(f"NGDiff needs 0 <= smooth < 1 and max_change >= 1, got smooth="
                             f"{self.smooth}, max_change={self.max_change}")
        object.__setattr__(self, "_rate", [None])   # the last GeN rate (not a hyperparameter)

    def __call__(self, out: Outputs) -> Loss:
        forget = out["forget"].batch_nll
        retain = out["retain"].batch_nll
        return Loss(total=retain - forget,
                    terms={"forget_nll": forget.detach(), "retain_nll": retain.detach()},
                    parts={"forget": forget, "retain": retain})

    def backward(self, loss: Loss, params: list[torch.nn.Parameter]) -> None:
        """Write d = g_R/||g_R|| - g_F/||g_F|| into each parameter's `.grad`."""
        missing = {"forget", "retain"} - set(loss.parts)
        if missing:
            raise ValueError(f"NGDiff.backward needs loss.parts 'forget' and 'retain'; "
                             f"missing {sorted(missing)}")
        params = [p for p in params if p.requires_grad]
        g_f = torch.autograd.grad(loss.parts["forget"], params, retain_graph=True, allow_unused=True)
        g_r = torch.autograd.grad(loss.parts["retain"], params, allow_unused=True)
        zero = lambda g, p: torch.zeros_like(p) if g is None else g
        g_f = [zero(g, p) for g, p in zip(g_f, params)]
        g_r = [zero(g, p) for g, p in zip(g_r, params)]
        for p, d in zip(params, normalized_difference(g_r, g_f)):
            p.grad = d.detach()

    def learning_rate(self, step: int, lr: float, loss_at: Callable[[float], float]) -> float:
        """GeN every `phi` steps; between them the last GeN rate (or `lr` before the first)."""
        if not self.adaptive:
            return lr
        if step % self.phi:
            return lr if self._rate[0] is None else self._rate[0]
        eta = lr if self._rate[0] is None else self._rate[0]
        best = gen_rate(eta, loss_at(0.0), loss_at(-eta), loss_at(eta))
        if best is None:
            return eta
        bounded = min(max(best, eta / self.max_change), eta * self.max_change)
        new = self.smooth * eta + (1 - self.smooth) * bounded
        self._rate[0] = min(max(new, self.lr_min), self.lr_max)
        return self._rate[0]
