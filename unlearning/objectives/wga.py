"""Weighted Gradient Ascent (WGA), Wang et al. 2025, Eq. (2).

"Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond" (ICLR 2025,
arXiv:2502.19301; the G-effect paper). Each forget token's log-likelihood is weighted by
w_t = p_theta(y_t | x, y_<t)^beta, with no gradient through the weight:

    L_WGA = mean_i (1/|y_i|) sum_t w_t * log p_theta(y_t | x, y_<t).

The weight damps GA's inverse-confidence term 1/p in the gradient of log p, so tokens that
are already unlikely stop being pushed. beta = 0 recovers GA exactly. Default beta = 5.0,
the authors' training code (tmlr-group/G-effect `dataloader.py`, loss types `wga` /
`wga_kl`: "else: self.beta = 5"); open-unlearning's `configs/trainer/WGA.yaml` ships
beta = 1.0. Under `loss_reduction="token"` (default) the sum runs
over all answer tokens of the batch, as open-unlearning's `compute_wga_loss`
(`(weight_ce * lm_loss)[shift_labels != -100].mean()`); under `sequence`, per row then over
rows. Either way beta = 0 is GA under the same reduction.
Optional retain regulariser as in the paper's "+KL"/"+RT" variants (`retain`, `alpha`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Loss, Objective, Outputs, register, token_weighted_ascent
from .regularised import Regularised


@dataclass(frozen=True)
class WGAForget:
    """The pure WGA forget term."""

    beta: float = 5.0
    name: ClassVar[str] = "wga"
    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = False

    def __call__(self, out: Outputs) -> Loss:
        f = out["forget"]
        logp = f.logprobs                                                # (B, T)
        weight = (self.beta * logp.detach()).exp()                       # (B, T)  p^beta
        return Loss(total=token_weighted_ascent(weight, logp, f.mask, f.reduction),
                    terms={"forget_nll": f.batch_nll.detach(),
                           "mean_weight": (weight * f.mask).sum() / f.mask.sum()},
                    weights={"forget": f.weights})


@register("wga")
@dataclass(frozen=True)
class WGA(Regularised):
    beta: float = 5.0
    retain: str = "none"
    alpha: float = 1.0

    def forget_term(self) -> Objective:
        return WGAForget(self.beta)
