"""Unlearning by preferring "I don't know": IdkPO (fine-tuning) and IdkDPO (DPO).

The `idk` split holds the forget questions, row for row, each with a random refusal drawn
from TOFU's `idontknow.jsonl` (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for
LLMs", Sec. 4, "Preference Optimization").

idkpo    L = NLL(refusals) [+ alpha * R(retain)], the NLL reduced as `loss_reduction` says:
         TOFU's preference-optimization baseline is this with R = retain NLL (`retain="nll"`).
idkdpo   DPO (Rafailov et al. 2023, Eq. 7) with the refusal y_w preferred over the forget
         answer y_l, in the NPO-style scale open-unlearning uses (Zhang et al. 2024, Eq. 2):
             L = -(2/beta) mean_i log sigma(beta [(s_w - s_w,ref) - (s_l - s_l,ref)]),
         s the summed answer log-prob. Rafailov's Eq. 7 is this times beta/2 (a learning-rate
         rescaling); with the 2/beta scale, beta -> 0 gives "descend on y_w, ascend on y_l"
         with unit weights. Default beta = 0.1 (the NPO paper's IdkDPO setting).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Loss, Objective, Outputs, register, seq_logprob
from .regularised import Regularised


@dataclass(frozen=True)
class IdkNLL:
    """Mean token NLL of the "I don't know" answers to the forget questions."""

    name: ClassVar[str] = "idk_nll"
    splits: ClassVar[tuple[str, ...]] = ("idk",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out: Outputs) -> Loss:
        w = out["idk"]
        return Loss(total=w.batch_nll, weights={"idk": w.weights})


@register("idkpo")
@dataclass(frozen=True)
class IdkPO(Regularised):
    retain: str = "none"
    alpha: float = 1.0

    def forget_term(self) -> Objective:
        return IdkNLL()


@dataclass(frozen=True)
class IdkDPOForget:
    """The pure DPO term: refusal preferred over the forget answer."""

    beta: float = 0.1
    name: ClassVar[str] = "idkdpo"
    splits: ClassVar[tuple[str, ...]] = ("forget", "idk")
    needs_ref: ClassVar[bool] = True

    def __call__(self, out: Outputs) -> Loss:
        lose, win = out["forget"], out["idk"]
        if lose.labels.shape[0] != win.labels.shape[0]:
            raise ValueError(f"idkdpo pairs idk row i with forget row i; got "
                             f"{win.labels.shape[0]} idk rows and {lose.labels.shape[0]} forget rows")
        win_ratio = (seq_logprob(win.logprobs, win.mask)
                     - seq_logprob(win.ref_logprobs, win.mask).detach())      # (B,)
        lose_ratio = (seq_logprob(lose.logprobs, lose.mask)
                      - seq_logprob(lose.ref_logprobs, lose.mask).detach())   # (B,)
        loss = -(2.0 / self.beta) * F.logsigmoid(self.beta * (win_ratio - lose_ratio))  # (B,)
        w = torch.full_like(loss, 1.0 / loss.shape[0]).detach()             # (B,) a row mean
        return Loss(total=loss.mean(), terms={"forget_nll": lose.batch_nll.detach(),
                                              "idk_nll": win.batch_nll.detach()},
                    weights={"forget": w, "idk": w})


@register("idkdpo")
@dataclass(frozen=True)
class IdkDPO(Regularised):
    beta: float = 0.1
    retain: str = "none"
    alpha: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"IdkDPO needs beta > 0, got {self.beta}")

    def forget_term(self) -> Objective:
        return IdkDPOForget(self.beta)
