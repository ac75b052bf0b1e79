"""Pure metric formulas on numbers (no model): TOFU, ROUGE, memorisation.

References:
    TOFU: Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv:2401.06121,
        Sec. 2.5 (probability, ROUGE, truth ratio, model utility, forget quality).
    Extraction strength: Carlini et al. 2021 ("Extracting training data from LLMs") as defined
        in Wang et al. 2025, "Towards effective evaluations and comparisons for LLM
        unlearning methods" (ICLR), Eq. 4; exact memorisation: Tirumala et al. 2022, Eq. 1.

Throughout, `nll` is the MEAN per-token negative log-likelihood of an answer (the TOFU "avg
loss"), so exp(-nll) is the length-normalised probability P(a|q)^(1/|a|) of TOFU Eq. (1).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import hmean, ks_2samp


def length_normalised_prob(nll: np.ndarray) -> np.ndarray:
    """TOFU probability of one answer: P(a|q)^(1/|a|) = exp(-mean token NLL)."""
    return np.exp(-np.asarray(nll, dtype=float))


def normalised_option_prob(gt_nll: np.ndarray, pert_nll: np.ndarray) -> np.ndarray:
    """TOFU probability on real authors / world facts: p_gt / (p_gt + sum_j p_pert_j).

    Args:
        gt_nll: (N,) mean token NLL of the correct answer.
        pert_nll: (N, K) mean token NLL of the K wrong options.
    """
    p_gt = length_normalised_prob(gt_nll)                           # (N,)
    p_pert = length_normalised_prob(pert_nll)                       # (N, K)
    return p_gt / (p_gt + p_pert.sum(-1))


TRUTH_RATIO_MEANS = ("geometric", "arithmetic")


def truth_ratio(para_nll: np.ndarray, pert_nll: np.ndarray, mean: str = "geometric") -> np.ndarray:
    """Per-instance truth ratio R (false over true): perturbed answers against the paraphrase.

    mean="geometric" (default, the reference code): R = exp(nll_para - mean_j nll_pert_j)
        = geomean_j P(a_pert_j|q)^(1/|a_pert_j|) / P(a_para|q)^(1/|a_para|). TOFU
        `aggregate_eval_stat.py` (`get_model_utility`/`get_forget_quality`: exp(perturbed -
        paraphrased) with the perturbed avg losses averaged first) and open-unlearning
        `src/evals/metrics/memorization.py::truth_ratio` (wrong_prob / correct_prob with
        `aggregate_to_1D` averaging the perturbed avg_loss).
    mean="arithmetic": the TOFU paper's Eq. (2) text, R = mean_j p_pert_j / p_para.
    (Reference lines: TOFU aggregate_eval_stat.py L63-71; open-unlearning memorization.py
    `truth_ratio`, "wrong_prob / (correct_prob + 1e-10)"; the 1e-10 is left out here.)
    """
    if mean not in TRUTH_RATIO_MEANS:
        raise ValueError(f"truth ratio mean must be one of {TRUTH_RATIO_MEANS}, got {mean!r}")
    para = np.asarray(para_nll, float)                              # (N,)
    pert = np.asarray(pert_nll, float)                              # (N, K)
    if mean == "geometric":
        return np.exp(para - pert.mean(-1))
    return np.exp(-pert).mean(-1) / np.exp(-para)


def truth_ratio_gm(para_nll: np.ndarray, pert_nll: np.ndarray) -> np.ndarray:
    """Per-instance truth ratio in TOFU's stored orientation (true over false, geometric mean):
    1 / truth_ratio(..., "geometric"); TOFU's forget-quality statistic.

    exp(mean_j nll_pert_j - nll_para) = P(para)^(1/|para|) / geomean_j P(pert_j)^(1/|pert_j|)
    (true over false; the orientation does not matter for the KS test, which is invariant
    under a monotone map of both samples).
    """
    return np.exp(np.asarray(pert_nll, float).mean(-1) - np.asarray(para_nll, float))


def truth_ratio_forget(r: np.ndarray) -> float:
    """Forget-set truth-ratio score: mean_i min(R_i, 1/R_i) (1 = true and false equally likely)."""
    r = np.asarray(r, float)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def truth_ratio_utility(r: np.ndarray) -> float:
    """Non-forget truth-ratio score (a model-utility input): mean_i max(0, 1 - R_i)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(r, float))))


def forget_quality(tr_model: np.ndarray, tr_retain: np.ndarray) -> tuple[float, float]:
    """TOFU forget quality: (p-value, statistic) of the two-sample KS test between the forget-set
    truth ratios (geometric form) of the evaluated model and of the retain model."""
    res = ks_2samp(np.asarray(tr_model, float), np.asarray(tr_retain, float))
    return float(res.pvalue), float(res.statistic)


def model_utility(values: Sequence[float]) -> float:
    """TOFU model utility: harmonic mean of the nine retain / real-author / world-fact numbers.
    0 if any is 0 (scipy's limit), NaN if any is NaN."""
    v = np.asarray(values, float)
    if np.isnan(v).any():
        return float("nan")
    if (v < 0).any():
        raise ValueError(f"model utility needs non-negative inputs; found {v.tolist()}")
    return 0.0 if (v == 0).any() else float(hmean(v))


_SCORER = None


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair ROUGE-L (recall, F1) of `rouge-score` with the Porter stemmer (TOFU uses recall;
    open-unlearning's MUSE configs use F1)."""
    global _SCORER
    if len(predictions) != len(references):
        raise ValueError(f"rouge_l needs equal lengths; got {len(predictions)} predictions and "
                         f"{len(references)} references")
    if _SCORER is None:
        from rouge_score import rouge_scorer
        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [_SCORER.score(ref, pred)["rougeL"] for pred, ref in zip(predictions, references)]
    return (np.array([s.recall for s in scores], float), np.array([s.fmeasure for s in scores], float))


ES_NO_MATCH = ("reference", "paper")


def extraction_strength(top1: np.ndarray, mask: np.ndarray, no_match: str = "reference") -> np.ndarray:
    """Per-row ES = 1 - k*/L, k* the shortest prefix after which every label token is the
    model's greedy (teacher-forced argmax) prediction; L the label length (Wang et al. 2025,
    Eq. 4; Carlini et al. 2021).

    A row where not even the last token is predicted has no such k < L:
        no_match="reference" (default): ES = 1/L, as open-unlearning's loop leaves k = L - 1
            (`src/evals/metrics/memorization.py::extraction_strength`, the `for k in
            range(valid_len)` loop that falls through);
        no_match="paper": ES = 0 (k* = L).
    Callers pass open-unlearning's label set, i.e. without each row's final label (the EOS of
    a QA row; `TokenScores.without_last`).

    Args:
        top1: (N, L) bool, label tokens left-aligned. mask: (N, L) bool, True on real tokens.
    """
    if no_match not in ES_NO_MATCH:
        raise ValueError(f"extraction strength no_match must be one of {ES_NO_MATCH}, "
                         f"got {no_match!r}")
    mask = np.asarray(mask, bool)
    ok = np.asarray(top1, bool) | ~mask                             # padding never breaks a run
    suffix_ok = np.flip(np.cumprod(np.flip(ok, -1), -1), -1).astype(bool)   # (N, L)
    n = mask.sum(-1)                                                # (N,)
    # k* = first position from which the whole suffix matches; L when none does
    first = np.where(suffix_ok.any(-1), suffix_ok.argmax(-1), n)    # (N,)
    k = np.minimum(first, n)
    if no_match == "reference":
        k = np.minimum(k, np.maximum(n - 1, 0))
    return 1.0 - k / np.maximum(n, 1)


def exact_memorization(top1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row EM = fraction of label tokens whose greedy prediction equals the label."""
    return (np.asarray(top1) & mask).sum(-1) / np.maximum(mask.sum(-1), 1)
