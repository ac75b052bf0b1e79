"""TOFU evaluation (Maini et al. 2024, arXiv:2401.06121, Sec. 2.5), per instance.

Sets and what each gets (N capped by `max_instances`):
    forget        <forget_split>_perturbed: gold / paraphrased / 5 perturbed answers
    retain        retain_perturbed (first 400 of `full`)
    real_authors  real_authors_perturbed: gold + 3 wrong options
    world_facts   world_facts_perturbed: gold + 3 wrong options
    holdout       holdout01/05/10 (never trained on): membership-inference baseline

Averaging, which varies between TOFU's paper, its code and open-unlearning:
    Probability    forget/retain: mean_i exp(-nll_i); real authors / world facts:
                   mean_i p_gt / (p_gt + sum_j p_pert_j), p = exp(-nll) (length-normalised).
    Truth ratio    default the reference code's GEOMETRIC mean over perturbed answers,
                   R_i = exp(nll_para_i - mean_j nll_pert_ij) (TOFU aggregate_eval_stat.py
                   L63-71, open-unlearning `truth_ratio`); `truth_ratio="arithmetic"` gives
                   the paper's Eq. 2, R_i = mean_j p_pert_ij / p_para_i. Forget: mean
                   min(R, 1/R); others: mean max(0, 1 - R) (real authors / world facts use the
                   gold answer as the paraphrase).
    Forget quality KS p-value on the GEOMETRIC form exp(mean_j nll_pert_ij - nll_para_i) (TOFU
                   code, `get_forget_quality`, L10-26), model vs retain model.
    ES, EM, Min-K% and Min-K%++ leave out each answer's final (EOS) label, as open-unlearning.
    Model utility  harmonic mean of the nine retain / ra / wf numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data import load_split, prompt_text
from . import mia, stats
from .generation import generate
from .record import Part
from .scoring import score_qa

FORGET_SPLITS = ("forget01", "forget05", "forget10")
SETS = {"forget": "{f}_perturbed", "retain": "retain_perturbed",
        "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}
PREFIX = {"retain": "retain", "real_authors": "ra", "world_facts": "wf"}


def _records(split: str, data_dir, n: int | None) -> list[dict]:
    recs = load_split("tofu", split, data_dir)
    return recs[:n] if n else recs


def _qa_set(model, tok, recs: list[dict], name: str, *, batch_size: int, max_new_tokens: int,
            progress: bool, generate_answers: bool = True,
            truth_ratio: str = "geometric") -> tuple[Part, dict]:
    """Score gold, paraphrased and perturbed answers of one set and generate its answers."""
    n, k = len(recs), len(recs[0]["perturbed_answer"])
    if any(len(r["perturbed_answer"]) != k for r in recs):
        raise ValueError(f"tofu {name}: expected {k} perturbed answers per record throughout")
    has_para = "paraphrased_answer" in recs[0]       # else the gold answer is the paraphrase
    pairs = [(r["question"], r["answer"]) for r in recs]
    pairs += [(r["question"], r["paraphrased_answer"]) for r in recs] if has_para else []
    pairs += [(r["question"], a) for r in recs for a in r["perturbed_answer"]]
    sc = score_qa(model, tok, pairs, batch_size=batch_size, progress=progress, desc=f"tofu {name}")
    nll = sc.nll                                                     # (N * (1 + [1] + K),)
    gt, m = nll[:n], (2 * n if has_para else n)
    para, pert = (nll[n: m] if has_para else gt), nll[m:].reshape(n, k)
    gold = sc.take(slice(0, n))
    r = stats.truth_ratio(para, pert, truth_ratio)                   # (N,)
    short = gold.without_last()                                      # no EOS (open-unlearning)
    values = {"nll": gt, "perplexity": np.exp(gt), "truth_ratio": r,
              "truth_ratio_gm": stats.truth_ratio_gm(para, pert),
              "extraction_strength": stats.extraction_strength(short.top1, short.mask),
              "exact_memorization": stats.exact_memorization(short.top1, short.mask),
              "probability": (stats.length_normalised_prob(gt) if name in ("forget", "retain")
                              else stats.normalised_option_prob(gt, pert))}
    numbers = {"para_prob": float(np.mean(np.exp(-para))),
               "pert_prob": float(np.mean(np.exp(-pert))), "gold": gold}
    if generate_answers:
        templated = bool(getattr(tok, "chat_template", None))
        gens = generate(model, tok, [prompt_text(tok, r["question"]) for r in recs],
                        max_new_tokens=max_new_tokens, batch_size=batch_size,
                        add_special_tokens=not templated, progress=progress,
                        desc=f"tofu {name} generate")
        values["rouge_l"], values["rouge_l_f1"] = stats.rouge_l(gens, [r["answer"] for r in recs])
    part = Part(name, [r["instance_id"] for r in recs], values, gold.n_tokens)
    return part, numbers


def load_truth_ratios(source) -> np.ndarray:
    """Retain-model truth ratios from an array, a .npy file, or a .json list / {"truth_ratio": [...]}."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix == ".npy":
            return np.load(path).astype(float)
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            data = data.get("truth_ratio", data.get("truth_ratios")) if isinstance(data, dict) else data
            if data is None:
                raise ValueError(f"{path}: expected a JSON list or a dict with key 'truth_ratio'")
            return np.asarray(data, float)
        raise ValueError(f"retain truth ratios: expected an array, a .npy or .json file, or a "
                         f"model directory; got {source!r}")
    return np.asarray(source, float)


def tofu_truth_ratios(model, tokenizer, *, forget_split: str = "forget05", data_dir=None,
                      max_instances: int | None = None, batch_size: int = 8,
                      progress: bool = True) -> np.ndarray:
    """(N,) forget-set truth ratios exp(mean_j nll_pert_j - nll_para) of a (retain) model, the
    geometric form TOFU's forget quality compares (Maini et al. 2024, Sec. 2.5.1). Cache them
    with `np.save` and pass the file as `evaluate(..., retain_truth_ratios=path)`."""
    if forget_split not in FORGET_SPLITS:
        raise ValueError(f"unknown TOFU forget split {forget_split!r}; expected one of {FORGET_SPLITS}")
    recs = _records(SETS["forget"].format(f=forget_split), data_dir, max_instances)
    part, _ = _qa_set(model, tokenizer, recs, "forget", batch_size=batch_size, max_new_tokens=0,
                      progress=progress, generate_answers=False)
    return part.values["truth_ratio_gm"]


def evaluate_tofu(model, tok, *, forget_split: str, data_dir, max_instances, batch_size: int,
                  max_new_tokens: int, retain_truth_ratios, retain_auc, progress: bool,
                  truth_ratio: str = "geometric"):
    """All TOFU metrics. Returns (parts, summary, notes)."""
    parts, summary, notes, nums = [], {}, {}, {}
    for name, pattern in SETS.items():
        recs = _records(pattern.format(f=forget_split), data_dir, max_instances)
        part, nums[name] = _qa_set(model, tok, recs, name, batch_size=batch_size,
                                   max_new_tokens=max_new_tokens, progress=progress,
                                   truth_ratio=truth_ratio)
        parts.append(part)
    by = {p.split: p.values for p in parts}
    f = by["forget"]
    summary["forget_Q_A_Prob"] = float(np.mean(f["probability"]))
    summary["forget_Q_A_PARA_Prob"] = nums["forget"]["para_prob"]
    summary["forget_Q_A_PERT_Prob"] = nums["forget"]["pert_prob"]
    summary["forget_Q_A_ROUGE"] = float(np.mean(f["rouge_l"]))
    summary["forget_truth_ratio"] = stats.truth_ratio_forget(f["truth_ratio"])
    if isinstance(retain_truth_ratios, (str, Path)) and Path(retain_truth_ratios).is_dir():
        from ..models import load_model
        retain_model, retain_tok = load_model(str(retain_truth_ratios))
        retain_truth_ratios = tofu_truth_ratios(
            retain_model, retain_tok, forget_split=forget_split, data_dir=data_dir,
            max_instances=max_instances, batch_size=batch_size, progress=progress)
    summary["forget_quality"], summary["forget_quality_ks_statistic"] = \
        _forget_quality(f["truth_ratio_gm"], retain_truth_ratios, notes)
    nine = []
    for name, pre in PREFIX.items():
        v = by[name]
        prob = f"{pre}_Q_A_Prob" + ("" if name == "retain" else "_normalised")
        tr = "retain_Truth_Ratio" if name == "retain" else f"{pre}_Truth_Ratio"
        summary[prob] = float(np.mean(v["probability"]))
        summary[f"{pre}_Q_A_ROUGE"] = float(np.mean(v["rouge_l"]))
        summary[tr] = stats.truth_ratio_utility(v["truth_ratio"])
        nine += [summary[prob], summary[f"{pre}_Q_A_ROUGE"], summary[tr]]
    summary["model_utility"] = stats.model_utility(nine)
    summary["extraction_strength"] = float(np.mean(f["extraction_strength"]))
    summary["exact_memorization"] = float(np.mean(f["exact_memorization"]))
    parts.append(_holdout_mia(model, tok, parts[0], nums["forget"]["gold"], forget_split,
                              data_dir, max_instances, batch_size, progress, summary,
                              retain_auc, notes))
    return parts, summary, notes


def _forget_quality(tr_model: np.ndarray, retain, notes: dict) -> tuple[float, float]:
    if retain is None:
        notes["forget_quality"] = ("NaN: no retain-model truth ratios given (pass "
                                   "retain_truth_ratios= an array, a .npy/.json file from "
                                   "tofu_truth_ratios, or a retain model directory)")
        return float("nan"), float("nan")
    tr_retain = retain if isinstance(retain, np.ndarray) else load_truth_ratios(retain)
    if len(tr_retain) > len(tr_model):
        notes["forget_quality_retain_n"] = (f"retain truth ratios cut from {len(tr_retain)} to "
                                            f"the {len(tr_model)} evaluated forget instances")
        tr_retain = tr_retain[: len(tr_model)]
    elif len(tr_retain) < len(tr_model):
        notes["forget_quality_retain_n"] = (f"only {len(tr_retain)} retain truth ratios for "
                                            f"{len(tr_model)} forget instances; KS uses both")
    return stats.forget_quality(tr_model, tr_retain)


def _holdout_mia(model, tok, forget: Part, gold, forget_split, data_dir, max_instances,
                 batch_size, progress, summary, retain_auc, notes) -> Part:
    """MIA scores on forget vs holdout answers (open-unlearning's TOFU privleak setting)."""
    fre = _records(SETS["forget"].format(f=forget_split), data_dir, max_instances)
    hre = _records(forget_split.replace("forget", "holdout"), data_dir, max_instances)
    h = score_qa(model, tok, [(r["question"], r["answer"]) for r in hre],
                 batch_size=batch_size, progress=progress, desc="tofu holdout")
    fs = mia.mia_scores(gold, [r["answer"] for r in fre])
    hs = mia.mia_scores(h, [r["answer"] for r in hre])
    for key in mia.ATTACKS:
        forget.values[key] = fs[key]
        summary[key] = mia.auc(fs[key], hs[key])
    hl = h.without_last()
    ref = 0.5 if retain_auc is None else float(retain_auc)
    if retain_auc is None:
        notes["privleak"] = "AUC_retain = 0.5 (no retain-model AUC given)"
    summary["privleak"] = mia.privleak(summary["mia_min_k"], ref)
    return Part("holdout", [r["instance_id"] for r in hre],
                {"nll": h.nll, "probability": np.exp(-h.nll), "perplexity": np.exp(h.nll),
                 "extraction_strength": stats.extraction_strength(hl.top1, hl.mask),
                 "exact_memorization": stats.exact_memorization(hl.top1, hl.mask), **hs},
                h.n_tokens)
