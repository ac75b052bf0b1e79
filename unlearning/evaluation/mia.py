"""Membership-inference scores, their AUCs, and MUSE PrivLeak.

Every score is loss-like, as in open-unlearning: HIGHER means "looks less like training data".
The AUC is that of telling forget (members, label 0) from holdout (non-members, label 1), i.e.
P(score_holdout > score_forget): 0.5 for a model that never saw either set, towards 1 for a
model that memorised the forget set.

References:
    LOSS: Yeom et al. 2018. ZLib: Carlini et al. 2021, Sec. 5.1 ("ratio of log-perplexity to
    zlib entropy"). Min-K% Prob: Shi et al. 2024, "Detecting pretraining data from LLMs", Eq. 1.
    Min-K%++: Zhang et al. 2024, "Min-K%++", Eq. 2-3. PrivLeak: Shi et al. 2024, "MUSE: Machine
    Unlearning Six-Way Evaluation", arXiv:2407.06460, Sec. 3 (Eq. for PrivLeak).
"""
from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from .scoring import TokenScores

ATTACKS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")


def _lowest_k_mean(values: np.ndarray, mask: np.ndarray, k: float) -> np.ndarray:
    """(N,) mean of the max(1, int(k * n)) smallest masked entries of each row."""
    filled = np.where(mask, values, np.inf)                         # (N, L)
    ordered = np.sort(filled, axis=-1)                              # (N, L)
    n = mask.sum(-1)                                                # (N,)
    m = np.maximum(1, (k * n).astype(int))                          # (N,)
    take = np.arange(values.shape[-1])[None, :] < m[:, None]        # (N, L)
    return np.where(take, ordered, 0.0).sum(-1) / m


def mia_scores(scores: TokenScores, texts: Sequence[str], k: float = 0.4) -> dict[str, np.ndarray]:
    """Per-row loss-like MIA scores (higher = less member-like).

    mia_loss            mean token NLL.
    mia_zlib            mean token NLL / len(zlib.compress(text)) (bytes; Carlini et al. 2021).
    mia_min_k           -mean of the k-fraction lowest token log-probs (Shi et al. 2024).
    mia_min_k_plus_plus -mean of the k-fraction lowest (log p - mu) / sigma (Zhang et al. 2024).
    """
    if len(texts) != scores.logprob.shape[0]:
        raise ValueError(f"mia_scores got {len(texts)} texts for {scores.logprob.shape[0]} rows")
    nll = scores.nll                                                 # (N,)
    zl = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], float)
    z = (scores.logprob - scores.mu) / np.where(scores.sigma > 0, scores.sigma, 1.0)  # (N, L)
    return {"mia_loss": nll, "mia_zlib": nll / zl,
            "mia_min_k": -_lowest_k_mean(scores.logprob, scores.mask, k),
            "mia_min_k_plus_plus": -_lowest_k_mean(z, scores.mask, k)}


def auc(forget: np.ndarray, holdout: np.ndarray) -> float:
    """AUC of separating forget (label 0) from holdout (label 1) by a loss-like score."""
    forget, holdout = np.asarray(forget, float), np.asarray(holdout, float)
    if len(forget) == 0 or len(holdout) == 0:
        return float("nan")
    labels = np.r_[np.zeros(len(forget)), np.ones(len(holdout))]
    return float(roc_auc_score(labels, np.r_[forget, holdout]))


def privleak(auc_model: float, auc_retain: float = 0.5) -> float:
    """MUSE PrivLeak = (AUC - AUC_retain) / AUC_retain * 100.

    Positive: the model separates forget from holdout better than a model never trained on the
    forget set (under-unlearning); negative: over-unlearning; ~0 is the goal.
    """
    if not auc_retain > 0 or math.isnan(auc_retain):
        raise ValueError(f"privleak needs the retain model's AUC > 0; got {auc_retain}")
    return (auc_model - auc_retain) / auc_retain * 100.0
