"""Batched greedy generation from LEFT-padded prompts.

Prompts are sorted by length (less padding), left-padded so every row's last prompt token sits at
the same position, and decoded greedily; HF `generate` derives position ids from the attention
mask, so a padded row produces the same tokens as the same prompt alone
(`tests/evaluation/test_generation.py`). Only the new tokens are decoded, and the text is cut
at the first stop string (MUSE KnowMem uses "\\n\\n" / "Question:", Shi et al. 2024, App. B).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


@contextmanager
def _sides(tokenizer, padding: str, truncation: str):
    """Temporarily set the tokenizer's padding/truncation sides (restored in `finally`)."""
    old = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = padding, truncation
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = old


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text up to the first occurrence of any stop string, stripped."""
    cut = min([text.find(s) for s in stop if s in text], default=len(text))
    return text[:cut].strip()


def _float64(model) -> bool:
    return next(model.parameters()).dtype == torch.float64


def _batches(lengths: Sequence[int], batch_size: int, equal_length: bool) -> list[np.ndarray]:
    """Index batches of length-sorted prompts; with `equal_length`, no batch mixes lengths.

    Equal-length batches need no padding. They are used for float64 models: in transformers
    5.x a left-padded float64 Llama gets NaN logits (the all-masked padding rows overflow the
    additive mask and the NaN leaks into real rows through 0 * NaN).
    """
    order = np.argsort([-n for n in lengths], kind="stable")
    if not equal_length:
        return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
    out, cur = [], []
    for i in order:
        if cur and (len(cur) == batch_size or lengths[cur[0]] != lengths[i]):
            out.append(np.array(cur))
            cur = []
        cur.append(i)
    return out + [np.array(cur)] if cur else out


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 64,
             batch_size: int = 8, max_prompt_tokens: int | None = None,
             add_special_tokens: bool = True, stop: Sequence[str] = (),
             progress: bool = True, desc: str = "generate") -> list[str]:
    """Greedy continuations of `prompts`, in input order.

    Args:
        prompts: prompt strings (e.g. `data.prompt_text(tokenizer, question)`).
        max_new_tokens: tokens generated per prompt at most (stops early at EOS).
        max_prompt_tokens: keep only the LAST this-many prompt tokens (long MUSE prefixes).
        add_special_tokens: False for chat-templated prompts, which already hold them.
        stop: strings at which each continuation is cut.
    """
    if not prompts:
        return []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trunc = dict(truncation=True, max_length=max_prompt_tokens) if max_prompt_tokens else {}
    lengths = [len(tokenizer(p, add_special_tokens=add_special_tokens).input_ids) for p in prompts]
    if max_prompt_tokens:
        lengths = [min(n, max_prompt_tokens) for n in lengths]
    texts: list[str] = [""] * len(prompts)
    with _sides(tokenizer, "left", "left"):
        for idx in tqdm(_batches(lengths, batch_size, equal_length=_float64(model)), desc=desc,
                        disable=not progress, leave=False):
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens, **trunc)
            ids = enc.input_ids.to(model.device)                        # (B, P)
            attn = enc.attention_mask.to(model.device)                  # (B, P)
            out = model.generate(input_ids=ids, attention_mask=attn, do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id, temperature=None,
                                 top_p=None, top_k=None)                # (B, P + new)
            new = out[:, ids.shape[1]:]                                 # (B, new)
            for i, t in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                texts[i] = cut_at_stop(t, stop)
    return texts
