"""Gradient Difference (GradDiff): GA on forget plus a retain term.

Liu et al. 2022 ("Continual Learning and Private Unlearning"), Eq. (3); TOFU (Maini et al.
2024, Sec. 4): L = -ell_f + alpha * R(retain), with R the retain NLL or KL(p_ref || p_theta).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Loss, Outputs, register
from .compose import RetainKL, RetainNLL, Weighted
from .ga import GA

RETAIN_TERMS = {"nll": RetainNLL, "kl": RetainKL}


@register("graddiff")
@dataclass(frozen=True)
class GradDiff:
    alpha: float = 1.0
    retain: str = "nll"

    def __post_init__(self):
        if self.retain not in RETAIN_TERMS:
            raise ValueError(f"graddiff retain term must be one of {sorted(RETAIN_TERMS)}, "
                             f"got {self.retain!r}")

    @property
    def _composed(self) -> Weighted:
        return Weighted(((1.0, GA()), (self.alpha, RETAIN_TERMS[self.retain]())))

    @property
    def splits(self) -> tuple[str, ...]:
        return self._composed.splits

    @property
    def needs_ref(self) -> bool:
        return self.alpha != 0 and self._composed.needs_ref

    def __call__(self, out: Outputs) -> Loss:
        return self._composed(out)
