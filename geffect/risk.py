"""The risk R of a G-effect: the mean token NLL of each instance over its answer tokens.

Wang et al. 2025, Definition 1 uses R = the NLL on the target data; per instance we take the
mean over answer tokens (labels != -100) with the HF shift: logits[:, t] predict labels[:, t+1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def answer_counts(labels: Tensor) -> Tensor:
    """(N,) number of answer tokens that count in R_n (labels[:, 1:] != -100)."""
    return (labels[:, 1:] != -100).sum(-1)                          # (N,)


def row_risk(logits: Tensor, labels: Tensor) -> Tensor:
    """(N,) R_n = mean over row n's answer tokens of -log p(label); rows with none give 0.

    Args:
        logits: (N, T, V) unshifted model logits.
        labels: (N, T) HF-style labels, -100 on prompt and padding, not shifted.
    """
    lg = logits[:, :-1]                                             # (N, T-1, V)
    lb = labels[:, 1:]                                              # (N, T-1)
    nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=-100,
                          reduction="none").view(lb.shape)          # (N, T-1)
    return nll.sum(-1) / (lb != -100).sum(-1).clamp_min(1)          # (N,)


def check_answers(labels: Tensor, where: str) -> Tensor:
    """(N,) answer-token counts; raise if a row has none (its risk would be undefined)."""
    n = answer_counts(labels)                                       # (N,)
    if bool((n == 0).any()):
        bad = torch.nonzero(n == 0).flatten().tolist()
        raise ValueError(f"{where}: rows {bad} have no answer tokens after the HF shift "
                         f"(expected labels[:, 1:] != -100 somewhere in every row)")
    return n
