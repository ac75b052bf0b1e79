"""Harry-Potter evaluation without book text (see the hp data folder's SOURCE.md).

    KnowMem      MUSE-Books knowmem forget / retain QA with in-context examples, ROUGE-L F1
                 (Shi et al. 2024, MUSE, Sec. 3, C2/C4).
    HP wiki      probability exp(-nll) per window and corpus perplexity on the Wikipedia plot
                 summaries of the seven books (forget-side text; the WHP setting of Eldan &
                 Russinovich 2023 evaluates familiarity with book content).
    Retain wiki  the same on MUSE-Books retain2 (HP Fandom-wiki articles, MUSE's retain text).
    Fluency      = corpus perplexity on that retain text.
Texts are cut into windows of `max_length` tokens (instance "<id>#<window>").
"""
from __future__ import annotations

import numpy as np

from ..data import load_split
from .knowmem import knowmem
from .muse import KNOWMEM_NEW_TOKENS
from .text import corpus_perplexity, score_texts

TEXT_SETS = {"hp_wiki": "wikipedia", "retain_wiki": "wiki_retain2"}


def evaluate_hp(model, tok, *, data_dir, max_instances, batch_size: int, max_new_tokens,
                max_length: int, progress: bool):
    """All HP metrics. Returns (parts, summary, notes)."""
    summary, parts = {}, []
    for which in ("forget", "retain"):
        part = knowmem(model, tok, "hp", which, data_dir=data_dir, max_instances=max_instances,
                       batch_size=batch_size, progress=progress,
                       max_new_tokens=max_new_tokens or KNOWMEM_NEW_TOKENS)
        summary[f"{which}_knowmem_ROUGE"] = float(np.mean(part.values["rouge_l_f1"]))
        parts.append(part)
    for name, split in TEXT_SETS.items():
        part, sc, _ = score_texts(model, tok, load_split("hp", split, data_dir), name,
                                  max_length=max_length, chunk=True, max_rows=max_instances,
                                  batch_size=batch_size, progress=progress)
        summary[f"{name}_Prob"] = float(np.mean(part.values["probability"]))
        summary[f"{name}_PPL"] = corpus_perplexity(sc)
        parts.append(part)
    summary["fluency_PPL"] = summary["retain_wiki_PPL"]
    notes = {"hp_text": "no Harry Potter book text is used; forget-side text is the Wikipedia "
                        "plot summaries, retain text MUSE-Books retain2 (Fandom wiki)"}
    return parts, summary, notes
