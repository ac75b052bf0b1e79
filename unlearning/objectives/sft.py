"""Supervised fine-tuning: minimise the mean token NLL of the `forget` split.

Used by `geffect finetune` to build TOFU target and retain models (Maini et al. 2024, Sec. 3:
the model is first fine-tuned on the fictitious-author QA pairs); the records to learn come in
the split the engine calls `forget`. It is the exact negative of GA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Loss, Outputs, register


@register("sft")
@dataclass(frozen=True)
class SFT:
    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out: Outputs) -> Loss:
        f = out["forget"]
        nll = f.batch_nll                                           # HF outputs.loss (token)
        return Loss(total=nll, terms={"forget_nll": nll}, weights={"forget": f.weights})
