"""SimNPO, Fan et al. 2024, Eq. (4): reference-free, length-normalised NPO.

"Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning"
(arXiv:2410.07163). With |y| the number of answer tokens and s_theta the summed log-prob,

    L = -(2/beta) * mean_i log sigma(-(beta/|y_i|) * s_theta(i) - gamma) + lam * R(retain)
      = -(2/beta) * mean_i log sigma(beta * ell_i - gamma)             + lam * R(retain),

ell_i the mean token NLL of forget row i. No reference model (unless R is the KL). Defaults:
beta = 2.5, gamma = 0 (the paper's TOFU setting); lam = 1.0 (open-unlearning's default
retain weight; the paper tunes it per benchmark); R the retain NLL. open-unlearning writes
gamma as beta * delta: sigma(beta * (ell - delta)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Loss, Objective, Outputs, register
from .regularised import Regularised


@dataclass(frozen=True)
class SimNPOForget:
    """The pure SimNPO forget term."""

    beta: float = 2.5
    gamma: float = 0.0
    name: ClassVar[str] = "simnpo"
    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out: Outputs) -> Loss:
        f = out["forget"]
        ell = f.nll                                                      # (B,) per-row mean
        loss = -(2.0 / self.beta) * F.logsigmoid(self.beta * ell - self.gamma)  # (B,)
        w = torch.full_like(loss, 1.0 / loss.shape[0]).detach()             # (B,) a row mean
        return Loss(total=loss.mean(), terms={"forget_nll": f.batch_nll.detach()},
                    weights={"forget": w})


@register("simnpo")
@dataclass(frozen=True)
class SimNPO(Regularised):
    """SimNPO + lam * R(retain); `retain` in {"nll", "kl", "none"}."""

    beta: float = 2.5
    gamma: float = 0.0
    lam: float = 1.0
    retain: str = "nll"

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"SimNPO needs beta > 0, got {self.beta}")

    @property
    def retain_weight(self) -> float:
        return self.lam

    def forget_term(self) -> Objective:
        return SimNPOForget(self.beta, self.gamma)
