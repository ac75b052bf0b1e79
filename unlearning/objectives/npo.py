"""Negative Preference Optimization (NPO), Zhang et al. 2024, Eq. (3).

"Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"
(arXiv:2404.05868). With s_theta(x, y) = sum_t log p_theta(y_t | x, y_<t) (seq-logp):

    L_NPO = -(2/beta) * mean_i log sigma(-beta * (s_theta(i) - s_ref(i))).

Its gradient is mean_i W_i * grad s_theta(i) with W_i = 2 sigma(beta (s_theta - s_ref)) in
(0, 2); as beta -> 0, W_i -> 1 and NPO becomes gradient ascent on *summed* (not averaged)
token log-likelihoods (the paper's Sec. 3, "NPO generalizes GA"). Default beta = 0.1 (the
paper's TOFU setting, also open-unlearning's). NPO+RT (the paper's Sec. 5) is
`retain="nll"`; NPO+KL is `retain="kl"`, with weight `alpha` (1.0 as in open-unlearning).
The NPO term is a mean over rows under either `loss_reduction` (open-unlearning
`compute_dpo_loss`); the reduction applies to its retain term.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Loss, Objective, Outputs, register, seq_logprob
from .regularised import Regularised


@dataclass(frozen=True)
class NPOForget:
    """The pure NPO forget term (no retain part)."""

    beta: float = 0.1
    name: ClassVar[str] = "npo"
    splits: ClassVar[tuple[str, ...]] = ("forget",)
    needs_ref: ClassVar[bool] = True

    def __call__(self, out: Outputs) -> Loss:
        f = out["forget"]
        s = seq_logprob(f.logprobs, f.mask)                              # (B,)
        s_ref = seq_logprob(f.ref_logprobs, f.mask).detach()             # (B,)
        loss = -(2.0 / self.beta) * F.logsigmoid(-self.beta * (s - s_ref))  # (B,)
        w = torch.full_like(loss, 1.0 / loss.shape[0]).detach()             # (B,) a row mean
        return Loss(total=loss.mean(), terms={"forget_nll": f.batch_nll.detach(),
                                              "log_ratio": (s - s_ref).mean().detach()},
                    weights={"forget": w})


@register("npo")
@dataclass(frozen=True)
class NPO(Regularised):
    """NPO, optionally + alpha * retain NLL (NPO+RT) or + alpha * KL (NPO+KL)."""

    beta: float = 0.1
    retain: str = "none"
    alpha: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"NPO needs beta > 0, got {self.beta}")

    def forget_term(self) -> Objective:
        return NPOForget(self.beta)
