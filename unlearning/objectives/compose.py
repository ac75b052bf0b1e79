"""Weighted sums of objectives, and the two retain regularisers they are built from.

Regularised variants (GradDiff, NPO + retain NLL, ...) are `Weighted` compositions, not
subclasses: the composition reads the union of its parts' splits and needs a reference model
only if one of its parts does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from .base import Loss, Objective, Outputs, reduce_tokens, register, token_kl


@dataclass(frozen=True)
class Weighted:
    """L = sum_i c_i * L_i. Terms are kept under each part's registered name."""

    items: tuple[tuple[float, Objective], ...]

    @property
    def splits(self) -> tuple[str, ...]:
        seen: list[str] = []
        for _, obj in self.items:
            seen += [s for s in obj.splits if s not in seen]
        return tuple(seen)

    @property
    def needs_ref(self) -> bool:
        return any(obj.needs_ref for _, obj in self.items)

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        return tuple(sorted({l for _, o in self.items for l in getattr(o, "hidden_layers", ())}))

    def __call__(self, out: Outputs) -> Loss:
        total: Tensor | float = 0.0
        terms: dict[str, Tensor] = {}
        weights: dict[str, Tensor] = {}
        shared = False
        for coef, obj in self.items:
            if coef == 0:
                continue  # a zero weight must not even evaluate the part (no ref needed)
            part = obj(out)
            total = total + coef * part.total
            shared |= bool(set(weights) & set(part.weights))
            weights.update({s: coef * w for s, w in part.weights.items()})
            name = getattr(obj, "name", type(obj).__name__.lower())
            terms[name] = part.total
            terms.update({f"{name}/{k}": v for k, v in part.terms.items()})
        # two parts on one split: a row's own objective is then not one weighted term
        return Loss(total=total, terms=terms, weights={} if shared else weights)


@register("retain_nll")
@dataclass(frozen=True)
class RetainNLL:
    """NLL on retain data under the split's reduction (the GradDiff regulariser; Liu et al.
    2022; open-unlearning `GradDiff.compute_retain_loss`: `model(**retain_inputs).loss`)."""

    splits: ClassVar[tuple[str, ...]] = ("retain",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out: Outputs) -> Loss:
        r = out["retain"]
        return Loss(total=r.batch_nll, weights={"retain": r.weights})


@register("retain_kl")
@dataclass(frozen=True)
class RetainKL:
    """KL(p_ref || p_theta) on retain answer tokens (TOFU's KL regulariser, Maini et al. 2024).

    Averaged over answer tokens only, pooled (`token`) or per row (`sequence`); the reference
    code averages over all positions, padding included (see `answer_kl`).
    """

    splits: ClassVar[tuple[str, ...]] = ("retain",)
    needs_ref: ClassVar[bool] = True

    def __call__(self, out: Outputs) -> Loss:
        r = out["retain"]
        if r.ref_logits is None:
            raise ValueError("retain_kl needs reference logits, but the retain split has none "
                             "(the objective must declare needs_ref = True)")
        kl = token_kl(r.logits, r.ref_logits)                            # (B, T)
        return Loss(total=reduce_tokens(kl, r.mask, r.reduction), weights={"retain": r.weights})
