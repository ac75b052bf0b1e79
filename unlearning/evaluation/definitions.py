"""What every summary metric and per-instance variable means: formula, averaging, citation.

Stored verbatim (as JSON) in each evaluation record's `definitions` attr. Names follow
open-unlearning (locuslab/open-unlearning, configs/eval/{tofu,muse}_metrics) where it has one.
`nll` is always the MEAN per-token NLL of the label tokens; p = exp(-nll) is the
length-normalised probability P(a|q)^(1/|a|).
"""
from __future__ import annotations

TOFU = "Maini et al. 2024, TOFU, arXiv:2401.06121, Sec. 2.5"
MUSE = "Shi et al. 2024, MUSE, arXiv:2407.06460, Sec. 3"
ES = "Carlini et al. 2021; Wang et al. 2025 (ICLR), Eq. 4"
MIA = ("LOSS: Yeom et al. 2018; ZLib: Carlini et al. 2021; Min-K%: Shi et al. 2024 (ICLR), "
       "Eq. 1; Min-K%++: Zhang et al. 2024, Eq. 2-3")


def _d(formula: str, averaging: str, citation: str) -> dict:
    return {"formula": formula, "averaging": averaging, "citation": citation}


_MEAN = "arithmetic mean over instances"
_TR_PAPER = ("R_i = exp(nll_para_i - mean_j nll_pert_ij) = geomean_j p(pert_ij) / p(para_i) "
             "(geometric mean, TOFU aggregate_eval_stat.py L63-71 and open-unlearning "
             "truth_ratio; attr truth_ratio_mean='arithmetic' means the paper's Eq. 2, "
             "mean_j p(pert_ij) / p(para_i))")

SUMMARY = {
    "forget_Q_A_Prob": _d("p = exp(-nll) of the gold answer", _MEAN, TOFU),
    "forget_Q_A_PARA_Prob": _d("p = exp(-nll) of the paraphrased answer", _MEAN, TOFU),
    "forget_Q_A_PERT_Prob": _d("mean_j exp(-nll) of the perturbed answers", _MEAN, TOFU),
    "forget_Q_A_ROUGE": _d("ROUGE-L recall (rouge-score, stemmer) of the greedy answer vs gold",
                           _MEAN, TOFU),
    "forget_truth_ratio": _d(f"mean_i min(R_i, 1/R_i); {_TR_PAPER}", _MEAN, TOFU),
    "forget_quality": _d("p-value of scipy.stats.ks_2samp between the forget-set truth ratios "
                         "exp(mean_j nll_pert_j - nll_para) of the model and of the retain model",
                         "GEOMETRIC mean over perturbed answers inside each ratio (TOFU code)",
                         TOFU),
    "forget_quality_ks_statistic": _d("KS statistic of the same test", "as forget_quality", TOFU),
    "retain_Q_A_Prob": _d("p = exp(-nll) of the gold answer on retain_perturbed", _MEAN, TOFU),
    "retain_Q_A_ROUGE": _d("ROUGE-L recall of the greedy answer", _MEAN, TOFU),
    "retain_Truth_Ratio": _d(f"mean_i max(0, 1 - R_i); {_TR_PAPER}", _MEAN, TOFU),
    "ra_Q_A_Prob_normalised": _d("p_gt / (p_gt + sum_j p_pert_j) over the 3 wrong options",
                                 _MEAN, TOFU),
    "ra_Q_A_ROUGE": _d("ROUGE-L recall of the greedy answer", _MEAN, TOFU),
    "ra_Truth_Ratio": _d("mean_i max(0, 1 - R_i); R_i as retain_Truth_Ratio with the gold "
                         "answer standing in for the paraphrase, as in TOFU", _MEAN, TOFU),
    "wf_Q_A_Prob_normalised": _d("as ra_Q_A_Prob_normalised, on world facts", _MEAN, TOFU),
    "wf_Q_A_ROUGE": _d("ROUGE-L recall of the greedy answer", _MEAN, TOFU),
    "wf_Truth_Ratio": _d("as ra_Truth_Ratio, on world facts", _MEAN, TOFU),
    "model_utility": _d("scipy.stats.hmean of the nine retain_/ra_/wf_ Prob, ROUGE and Truth "
                        "Ratio numbers", "harmonic mean of already-averaged numbers", TOFU),
    "extraction_strength": _d("1 - k*/L over the label tokens without the last (EOS) one, k* "
                              "the shortest prefix after which every label token is the "
                              "teacher-forced argmax; 1/L if none (open-unlearning "
                              "memorization.py extraction_strength)",
                              _MEAN + " (TOFU: forget QA; MUSE: privleak forget texts)", ES),
    "exact_memorization": _d("fraction of label tokens (without the last, EOS, one, as "
                             "open-unlearning) equal to the teacher-forced argmax",
                             _MEAN, "Tirumala et al. 2022, Eq. 1"),
    "mia_loss": _d("AUC(forget vs holdout) of the mean-token-NLL score", "AUC over instances", MIA),
    "mia_zlib": _d("AUC of nll / zlib-compressed bytes of the text", "AUC over instances", MIA),
    "mia_min_k": _d("AUC of -mean of the 40% lowest token log-probs (final label left out)",
                    "AUC over instances", MIA),
    "mia_min_k_plus_plus": _d("AUC of -mean of the 40% lowest (log p - mu) / sqrt(max(var, "
                              "1e-6)) (final label left out)", "AUC over instances", MIA),
    "privleak": _d("(A - A_retain) / A_retain * 100 with MUSE's A = 1 - AUC_min_k (AUC_retain "
                   "of the retain model if given, else 0.5); a memorising target is ~ -100 "
                   "(open-unlearning privacy.py privleak)", "AUC over instances", MUSE),
    "forget_verbmem_ROUGE": _d("ROUGE-L F1 of the greedy continuation (128 tokens) of a forget "
                               "prefix vs the true continuation", _MEAN, MUSE),
    "forget_knowmem_ROUGE": _d("ROUGE-L F1 of the greedy answer (32 tokens, cut at '\\n\\n' / "
                               "'Question:') after the in-context examples", _MEAN, MUSE),
    "retain_knowmem_ROUGE": _d("as forget_knowmem_ROUGE on the retain QA", _MEAN, MUSE),
    "retain_PPL": _d("exp(sum nll_tokens / n_tokens) on held-out retain text", "token-weighted "
                     "over the whole set (corpus perplexity)", MUSE),
    "hp_wiki_Prob": _d("exp(-nll) of each HP-Wikipedia plot-summary chunk", _MEAN,
                       "Eldan & Russinovich 2023 (WHP) setting; Wikipedia text, no book text"),
    "hp_wiki_PPL": _d("corpus perplexity of the HP-Wikipedia chunks", "token-weighted", "idem"),
    "retain_wiki_Prob": _d("exp(-nll) of each MUSE-Books retain (HP Fandom wiki) chunk", _MEAN,
                           MUSE),
    "retain_wiki_PPL": _d("corpus perplexity of the retain wiki chunks", "token-weighted", MUSE),
    "fluency_PPL": _d("= retain_wiki_PPL (fluency on neutral retain text)", "token-weighted", MUSE),
    "heldout_PPL": _d("corpus perplexity on the held-out retain set of the utility guard",
                      "token-weighted", "perplexity"),
    "heldout_nll": _d("mean token NLL on the held-out retain set", _MEAN, "perplexity"),
}

PER_INSTANCE = {
    "nll": "mean per-token NLL of the label tokens (gold answer / text chunk)",
    "probability": "exp(-nll); on real_authors / world_facts normalised over the options",
    "perplexity": "exp(nll)",
    "rouge_l": "ROUGE-L recall of the greedy generation vs the reference",
    "rouge_l_f1": "ROUGE-L F1 of the greedy generation vs the reference",
    "truth_ratio": "R = geomean_j p(pert_j) / p(para) (code form; false/true); the paper's "
                   "arithmetic mean when attr truth_ratio_mean = 'arithmetic'",
    "truth_ratio_gm": "exp(mean_j nll_pert_j - nll_para) (TOFU code form, geometric; true/false)",
    "extraction_strength": "1 - k*/L (see summary extraction_strength; final label left out)",
    "exact_memorization": "fraction of label tokens predicted by the argmax (final label left out)",
    "mia_loss": "mean token NLL (loss-like: higher = less member-like)",
    "mia_zlib": "nll / zlib bytes of the text",
    "mia_min_k": "-mean of the 40% lowest token log-probs (final label left out)",
    "mia_min_k_plus_plus": "-mean of the 40% lowest (log p - mu) / sqrt(max(var, 1e-6)) (final "
                           "label left out)",
}
