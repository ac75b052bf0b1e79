"""Gradient Ascent (GA): minimise -NLL on the forget set.

Jang et al. 2023 ("Knowledge Unlearning for Mitigating Privacy Risks in Language Models"),
Eq. (1); the TOFU baseline of Maini et al. 2024, Sec. 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Loss, Outputs, register


@register("ga")
@dataclass(frozen=True)
class GA:
    """L = -NLL(forget batch): under `token` reduction minus HF's `outputs.loss` (the TOFU and
    open-unlearning `GradAscent`: `loss = -outputs.loss`); under `sequence`, -mean_i ell_f(i)."""

    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out: Outputs) -> Loss:
        f = out["forget"]
        nll = f.batch_nll
        return Loss(total=-nll, terms={"forget_nll": nll}, weights={"forget": f.weights})
