"""A forget term plus an optional retain regulariser, as a composition (not a subclass).

NPO+RT (Zhang et al. 2024, Sec. 5), SimNPO (Fan et al. 2024, Eq. 4), IdkPO (TOFU's
"preference optimization", Maini et al. 2024, Sec. 4) all read
    L = L_forget + alpha * R(retain),    R in {none, retain NLL, KL(p_ref || p_theta)}.
A method file defines its pure forget term and mixes in `Regularised`, which builds
`compose.Weighted(((1, term), (alpha, R)))` and delegates `splits`, `needs_ref` and the call to
it. A zero weight or `retain="none"` drops R entirely, so no retain forward and no reference
model are asked for.
"""
from __future__ import annotations

from .base import Loss, Objective, Outputs
from .compose import RetainKL, RetainNLL, Weighted

RETAIN = {"none": None, "nll": RetainNLL, "kl": RetainKL}


def check_retain(method: str, retain: str) -> None:
    """Raise if `retain` is not one of the known regularisers."""
    if retain not in RETAIN:
        raise ValueError(f"{method} retain term must be one of {sorted(RETAIN)}, got {retain!r}")


def regularised(term: Objective, retain: str, alpha: float, forget_weight: float = 1.0) -> Weighted:
    """Weighted((forget_weight, term), (alpha, R)) with R named by `retain`; R dropped when
    unused."""
    items: tuple = ((forget_weight, term),)
    if RETAIN[retain] is not None and alpha != 0:
        items += ((alpha, RETAIN[retain]()),)
    return Weighted(items)


class Regularised:
    """Mixin for a dataclass with a field `retain`, a retain weight and a `forget_term()`.

    The retain weight is the field `alpha` unless the method overrides `retain_weight` (SimNPO
    and WTNPO call it `lam`, the papers' symbol, since their alpha means something else).

    `forget_term()` returns the pure forget objective (a small frozen dataclass with
    `splits`, `needs_ref` and a `name`). The engine sees the composed splits and reference
    need. Loss terms are the composition's ("<term>", "<term>/...", "retain_nll" or
    "retain_kl"); a "forget_nll" term of the forget part is also lifted to the top level so
    the engine's training record does not need an extra forward for it.
    """

    def forget_term(self) -> Objective:  # pragma: no cover - each method overrides it
        raise NotImplementedError

    def __post_init__(self):
        check_retain(getattr(self, "name", type(self).__name__), self.retain)

    @property
    def retain_weight(self) -> float:
        return self.alpha

    @property
    def forget_weight(self) -> float:
        return 1.0

    @property
    def composed(self) -> Weighted:
        return regularised(self.forget_term(), self.retain, self.retain_weight,
                           self.forget_weight)

    @property
    def splits(self) -> tuple[str, ...]:
        return self.composed.splits

    @property
    def needs_ref(self) -> bool:
        return self.composed.needs_ref

    def __call__(self, out: Outputs) -> Loss:
        term = self.forget_term()
        loss = self.composed(out)
        key = f"{term.name}/forget_nll"
        if key in loss.terms:
            loss.terms["forget_nll"] = loss.terms[key]
        return loss
