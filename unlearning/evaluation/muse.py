"""MUSE-News evaluation (Shi et al. 2024, arXiv:2407.06460, Sec. 3), per instance.

    VerbMem   ROUGE-L F1 between the greedy continuation (128 tokens) of each forget-text prefix
              and its true continuation (C1, no verbatim memorisation).
    KnowMem   ROUGE-L F1 of answers to forget / retain QA after the in-context examples (C2, C4).
    PrivLeak  (A - A_retain) / A_retain * 100 with MUSE's A = 1 - our AUC of Min-K% Prob
              (K = 40%) separating privleak forget from holdout articles (C3); also LOSS, ZLib
              and Min-K%++ AUCs. Articles are scored on their first `mia_max_length` tokens
              (2,048: open-unlearning's `configs/data/datasets/MUSE_MIA.yaml`; MUSE scores
              the full text), not on the `max_length` window.
    Fluency   corpus perplexity on the privleak retain articles (retain2 samples).

F1 (not recall) follows open-unlearning's MUSE configs; recall is kept per instance too.
The raw MUSE-News retain corpora (raw/retain1, raw/retain2) and raw/holdout are not staged
here (see the data folder's SOURCE.md); when absent the record's notes say so.
"""
from __future__ import annotations

import numpy as np

from ..data import data_dir as data_root, load_split
from . import mia, stats
from .generation import generate
from .knowmem import knowmem
from .record import Part
from .scoring import max_positions
from .text import corpus_perplexity, score_texts

VERBMEM_NEW_TOKENS = 128
KNOWMEM_NEW_TOKENS = 32


def _verbmem(model, tok, *, data_dir, max_instances, batch_size, max_new_tokens, progress) -> Part:
    recs = load_split("muse_news", "verbmem_forget", data_dir)[: max_instances or None]
    gens = generate(model, tok, [r["prompt"] for r in recs], max_new_tokens=max_new_tokens,
                    batch_size=batch_size, max_prompt_tokens=max_positions(model) - max_new_tokens,
                    progress=progress, desc="muse verbmem")
    recall, f1 = stats.rouge_l(gens, [r["gt"] for r in recs])
    return Part("verbmem_forget", [r["instance_id"] for r in recs],
                {"rouge_l": recall, "rouge_l_f1": f1})


def _retain_corpus_note(data_dir) -> str | None:
    root = data_root(data_dir)
    missing = [f"raw/{n}.json" for n in ("retain1", "retain2", "holdout")
               if root is None or not (root / "muse_news" / "raw" / f"{n}.json").exists()]
    if not missing:
        return None
    return (f"MUSE-News retain corpus absent ({', '.join(missing)} not in the data directory): "
            f"KnowMem-retain uses knowmem/retain_qa, fluency uses the privleak retain samples, "
            f"PrivLeak uses privleak/holdout")


MIA_MAX_LENGTH = 2048


def evaluate_muse(model, tok, *, data_dir, max_instances, batch_size: int, max_new_tokens,
                  max_length: int, retain_auc, progress: bool,
                  mia_max_length: int = MIA_MAX_LENGTH):
    """All MUSE-News metrics. Returns (parts, summary, notes)."""
    notes, summary = {}, {}
    verb = _verbmem(model, tok, data_dir=data_dir, max_instances=max_instances,
                    batch_size=batch_size, progress=progress,
                    max_new_tokens=max_new_tokens or VERBMEM_NEW_TOKENS)
    know = [knowmem(model, tok, "muse_news", w, data_dir=data_dir, max_instances=max_instances,
                    batch_size=batch_size, max_new_tokens=max_new_tokens or KNOWMEM_NEW_TOKENS,
                    progress=progress) for w in ("forget", "retain")]
    summary["forget_verbmem_ROUGE"] = float(np.mean(verb.values["rouge_l_f1"]))
    summary["forget_knowmem_ROUGE"] = float(np.mean(know[0].values["rouge_l_f1"]))
    summary["retain_knowmem_ROUGE"] = float(np.mean(know[1].values["rouge_l_f1"]))

    texts, scores = {}, {}
    parts = [verb, *know]
    for which in ("forget", "holdout", "retain"):
        recs = load_split("muse_news", f"privleak_{which}", data_dir)
        part, scores[which], texts[which] = score_texts(
            model, tok, recs, f"privleak_{which}", chunk=False,
            max_length=mia_max_length if which != "retain" else max_length,
            max_rows=max_instances, batch_size=batch_size, progress=progress)
        parts.append(part)
    attacks = {w: mia.mia_scores(scores[w], texts[w]) for w in ("forget", "holdout")}
    for part, w in zip(parts[3:5], ("forget", "holdout")):
        part.values.update(attacks[w])
    for key in mia.ATTACKS:
        summary[key] = mia.auc(attacks["forget"][key], attacks["holdout"][key])
    if retain_auc is None:
        notes["privleak"] = "AUC_retain = 0.5 (no retain-model AUC given)"
    summary["privleak"] = mia.privleak(summary["mia_min_k"],
                                       0.5 if retain_auc is None else float(retain_auc))
    summary["extraction_strength"] = float(np.mean(parts[3].values["extraction_strength"]))
    summary["exact_memorization"] = float(np.mean(parts[3].values["exact_memorization"]))
    summary["retain_PPL"] = corpus_perplexity(scores["retain"])
    note = _retain_corpus_note(data_dir)
    if note:
        notes["muse_retain_corpus"] = note
    return parts, summary, notes
