"""Utility guard: perplexity on a held-out retain set (cheap enough for every `--eval-every`).

Held-out means text the unlearning run neither forgets nor trains on as retain data:
    tofu       TOFU real_authors + world_facts gold answers (general knowledge QA; every
               fictitious-author QA is in some forget or retain split)
    muse_news  MUSE-News privleak retain articles (retain2 samples; the raw retain corpus is
               not staged, so no run trains on them)
    hp         MUSE-Books retain2 (HP Fandom wiki), windows of `max_length` tokens
Reported: heldout_PPL = exp(total NLL / total tokens) (token-weighted) and heldout_nll, the
mean over instances of the per-instance mean token NLL.
"""
from __future__ import annotations

import numpy as np

from ..data import load_split
from .record import Part
from .scoring import score_qa
from .text import corpus_perplexity, score_texts

UTILITY_SETS = ("tofu", "muse_news", "hp")


def evaluate_utility(model, tok, *, utility_set: str, data_dir, max_instances, batch_size: int,
                     max_length: int, progress: bool):
    """Held-out perplexity. Returns (parts, summary, notes)."""
    if utility_set not in UTILITY_SETS:
        raise ValueError(f"unknown utility set {utility_set!r}; expected one of {UTILITY_SETS}")
    if utility_set == "tofu":
        parts, total, count = [], 0.0, 0
        for split in ("real_authors", "world_facts"):
            recs = load_split("tofu", split, data_dir)[: max_instances or None]
            sc = score_qa(model, tok, [(r["question"], r["answer"]) for r in recs],
                          batch_size=batch_size, progress=progress, desc=f"utility {split}")
            nll = sc.nll
            parts.append(Part(split, [r["instance_id"] for r in recs],
                              {"nll": nll, "probability": np.exp(-nll), "perplexity": np.exp(nll)},
                              sc.n_tokens))
            total += float((nll * sc.n_tokens).sum())
            count += int(sc.n_tokens.sum())
        ppl = float(np.exp(total / count))
    else:
        split = "privleak_retain" if utility_set == "muse_news" else "wiki_retain2"
        part, sc, _ = score_texts(model, tok, load_split(utility_set, split, data_dir), split,
                                  max_length=max_length, chunk=utility_set == "hp",
                                  max_rows=max_instances, batch_size=batch_size, progress=progress)
        parts, ppl = [part], corpus_perplexity(sc)
    nll_all = np.concatenate([p.values["nll"] for p in parts])
    summary = {"heldout_PPL": ppl, "heldout_nll": float(nll_all.mean())}
    return parts, summary, {"utility_set": f"held-out set: {utility_set}"}
