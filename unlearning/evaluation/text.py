"""Raw-text sets (MUSE PrivLeak articles, HP wiki text): token windows, scoring, perplexity.

A text record becomes either its first `max_length` tokens (MUSE PrivLeak, as `data.encode_text`)
or, with `chunk=True`, consecutive windows of `max_length` tokens (HP wiki text, whose articles
are far longer than one window); window w of record "hp-wikipedia/3" is instance
"hp-wikipedia/3#w". Every token is a label, so the first token of a window is context only.
"""
from __future__ import annotations

import numpy as np

from . import stats
from .record import Part
from .scoring import TokenScores, max_positions, score_rows


def text_rows(tokenizer, records: list[dict], *, max_length: int, chunk: bool = False,
              max_rows: int | None = None) -> tuple[list[dict], list[str], list[str]]:
    """Encoded rows, their instance ids and their decoded texts (for zlib).

    With `chunk`, windows are taken record by record until `max_rows` rows exist.
    """
    rows, ids, texts = [], [], []
    for rec in records:
        tokens = tokenizer(rec["text"], add_special_tokens=True).input_ids
        starts = range(0, len(tokens), max_length) if chunk else [0]
        for w, s in enumerate(starts):
            window = tokens[s: s + max_length]
            if len(window) < 2:                                      # nothing to predict
                continue
            rows.append({"input_ids": window, "labels": list(window)})
            ids.append(f"{rec['instance_id']}#{w}" if chunk else rec["instance_id"])
            texts.append(tokenizer.decode(window, skip_special_tokens=True))
            if max_rows and len(rows) >= max_rows:
                return rows, ids, texts
    return rows, ids, texts


def corpus_perplexity(scores: TokenScores) -> float:
    """exp(total NLL / total tokens): the token-weighted perplexity of a whole set."""
    return float(np.exp(-(scores.logprob * scores.mask).sum() / scores.mask.sum()))


def score_texts(model, tokenizer, records: list[dict], split: str, *, max_length: int,
                chunk: bool, max_rows: int | None, batch_size: int,
                progress: bool) -> tuple[Part, TokenScores, list[str]]:
    """Per-instance nll / probability / perplexity / memorisation of a text set.

    Returns the Part, the token scores (for MIA and corpus perplexity) and the window texts.
    """
    max_length = min(max_length, max_positions(model))
    rows, ids, texts = text_rows(tokenizer, records, max_length=max_length, chunk=chunk,
                                 max_rows=max_rows)
    if not rows:
        raise ValueError(f"text set {split!r} yielded no rows of >= 2 tokens")
    sc = score_rows(model, tokenizer, rows, batch_size=batch_size, progress=progress, desc=split)
    nll, short = sc.nll, sc.without_last()                           # ES/EM: open-unlearning's
    values = {"nll": nll, "probability": np.exp(-nll), "perplexity": np.exp(nll),  # label set
              "extraction_strength": stats.extraction_strength(short.top1, short.mask),
              "exact_memorization": stats.exact_memorization(short.top1, short.mask)}
    return Part(split, ids, values, sc.n_tokens), sc, texts
