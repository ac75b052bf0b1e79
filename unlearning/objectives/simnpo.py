"""SimNPO, Fan et al. 2024, Eq. (4): reference-free, length-normalised NPO.

"Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning"
(arXiv:2410.07163). With |y| the number of answer tokens and s_theta the summed log-prob,

    L = c_f * [-(2/beta) * mean_i log sigma(-(beta/|y_i|) * s_theta(i) - gamma)] + lam * R(retain)
      = c_f * [-(2/beta) * mean_i log sigma(beta * ell_i - gamma)]             + lam * R(retain),

ell_i the mean token NLL of forget row i (a row mean under either `loss_reduction`, as
open-unlearning's `SimNPO.compute_loss`). No reference model (unless R is the KL). The paper's
Eq. 4 has no forget coefficient c_f (`forget_weight`), but the authors' TOFU runs scale the
forget term: defaults from OPTML-Group/Unlearn-Simple `TOFU/config/forget.yaml` (forget05:
beta = 2.5, gamma = 0, npo_coeff = c_f = 0.1375, grad_diff_coeff = lam = 1.0; its README
runs forget10 with npo_coeff = 0.125, beta = 4.5, open-unlearning's `configs/trainer/
SimNPO.yaml` defaults: gamma = 0.125, beta = 4.5, alpha = 1). R the retain NLL.
open-unlearning writes gamma as beta * delta: sigma(beta * (ell - delta)).
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
    forget_weight: float = 0.1375

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"SimNPO needs beta > 0, got {self.beta}")

    @property
    def retain_weight(self) -> float:
        return self.lam

    def forget_term(self) -> Objective:
        return SimNPOForget(self.beta, self.gamma)
