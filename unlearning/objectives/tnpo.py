"""Token-wise NPO (TNPO, Wang et al. 2025, Eq. 6) and its weighted variant WTNPO.

"Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond" (ICLR 2025,
arXiv:2502.19301). NPO's gradient weights the whole answer by one W = 2 sigma(beta * log
ratio); TNPO applies that weight per token, with p = p_theta(y_t | x, y_<t) and p_ref the
reference model's probability of the same token:

    TNPO:   w_t = 2 p^beta / (p^beta + p_ref^beta)        = 2 sigma(beta (log p - log p_ref))
    WTNPO:  w_t = 2 p^(beta+alpha) / (p^beta + p_ref^beta) = p^alpha * (TNPO's w_t)

and L = mean_i (1/|y_i|) sum_t w_t log p_t with w detached (the "ascent term"). The gradient
equals that of the token-wise NPO loss -(2/beta) sum_t log sigma(-beta (log p_t - log
p_ref,t)) (tested); the *value* is the weighted log-likelihood, as in the authors' code
(tmlr-group/G-effect, `ins_npo`, `w_ins_npo`), which also adds 1e-5 to the denominator; we
use the exact sigmoid form instead, so p_ref = p gives weights exactly 1 and TNPO = GA.
Defaults from the authors' training code (tmlr-group/G-effect `dataloader.py`, loss types
`tnpo` / `wtnpo_<alpha>`: "else: self.beta=4" and "except: self.alpha=1.5"): TNPO beta = 4;
WTNPO beta = 4, alpha = 1.5. (Their G-effect measuring script `dataloader_ge.py` sets
beta = 0.1 for `w_ins_npo`, then overrides it with its hyper_param; training uses the above.)
Both use `alpha` only as WTNPO's exponent; the retain weight is `lam` in both (an earlier
version called TNPO's retain weight `alpha`). The forget term pools the batch's answer
tokens under `loss_reduction="token"`, as the authors' `(npo_weights * ce)[mask].mean()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .base import Loss, Objective, Outputs, register, token_weighted_ascent
from .regularised import Regularised


def tnpo_weight(logp: Tensor, ref_logp: Tensor, beta: float, alpha: float = 0.0) -> Tensor:
    """(B, T) detached WTNPO weight 2 p^(beta+alpha) / (p^beta + p_ref^beta); alpha=0: TNPO."""
    logp, ref_logp = logp.detach(), ref_logp.detach()                    # (B, T)
    return 2 * torch.sigmoid(beta * (logp - ref_logp)) * (alpha * logp).exp()  # (B, T)


@dataclass(frozen=True)
class TNPOForget:
    """The pure (W)TNPO forget term; alpha = 0 is TNPO."""

    beta: float = 4.0
    alpha: float = 0.0
    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "tnpo" if self.alpha == 0 else "wtnpo"

    def __call__(self, out: Outputs) -> Loss:
        f = out["forget"]
        logp = f.logprobs                                                # (B, T)
        weight = tnpo_weight(logp, f.ref_logprobs, self.beta, self.alpha)  # (B, T)
        return Loss(total=token_weighted_ascent(weight, logp, f.mask, f.reduction),
                    terms={"forget_nll": f.batch_nll.detach(),
                           "mean_weight": (weight * f.mask).sum() / f.mask.sum()},
                    weights={"forget": f.weights})


@register("tnpo")
@dataclass(frozen=True)
class TNPO(Regularised):
    """TNPO; `retain`/`lam` add a retain regulariser with weight lam."""

    beta: float = 4.0
    retain: str = "none"
    lam: float = 1.0

    def forget_term(self) -> Objective:
        return TNPOForget(self.beta, 0.0)

    @property
    def retain_weight(self) -> float:
        return self.lam


@register("wtnpo")
@dataclass(frozen=True)
class WTNPO(Regularised):
    """WTNPO: weight exponent alpha on p; the retain weight is `lam` (alpha is taken)."""

    beta: float = 4.0
    alpha: float = 1.5
    retain: str = "none"
    lam: float = 1.0

    def forget_term(self) -> Objective:
        return TNPOForget(self.beta, self.alpha)

    @property
    def retain_weight(self) -> float:
        return self.lam
