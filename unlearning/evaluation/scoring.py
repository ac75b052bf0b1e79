"""Batched, padded teacher-forced scoring: per-token log-probabilities of the label tokens.

One forward per batch of right-padded rows (the data layer's `collate`); rows are sorted by
length first so batches carry little padding, and the results come back in input order. With
right padding and a causal mask, padding never changes the log-probability of a real token;
`tests/evaluation/test_scoring.py` checks this against a slow one-row-at-a-time loop.

Besides log p(y_t | y_<t), each token gets what the membership-inference and memorisation
metrics need, all from the same forward:
    mu[t], sigma[t]  mean and standard deviation of log p(z | y_<t) under z ~ p(. | y_<t)
                     (Min-K%++, Zhang et al. 2024, Eq. 2);
    top1[t]          whether the greedy (argmax) next token equals y_t (exact memorisation,
                     Tirumala et al. 2022; extraction strength, Carlini et al. 2021 / 2023).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import collate


@dataclass
class TokenScores:
    """Per-token scores of N rows, left-aligned on each row's label tokens and zero-padded.

    Attributes:
        logprob: (N, L) log p of each label token, in label order; 0 past the row's length.
        mu: (N, L) E_z[log p(z)] of the predictive distribution at that token.
        sigma: (N, L) std_z[log p(z)] at that token.
        top1: (N, L) True where the argmax prediction equals the label token.
        mask: (N, L) True on the first n_tokens[i] entries of row i.
    """

    logprob: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    top1: np.ndarray
    mask: np.ndarray

    @property
    def n_tokens(self) -> np.ndarray:
        return self.mask.sum(-1)                                     # (N,)

    @property
    def nll(self) -> np.ndarray:
        """(N,) mean negative log-likelihood per label token (the TOFU "avg loss")."""
        n = self.n_tokens
        if (n == 0).any():
            raise ValueError(f"{int((n == 0).sum())} row(s) have no label tokens; expected at "
                             f"least one answer token per row (raise max_length)")
        return -(self.logprob * self.mask).sum(-1) / n               # (N,)

    def without_last(self) -> "TokenScores":
        """The same scores with each row's final label token masked out.

        open-unlearning scores exact memorisation, extraction strength, Min-K% and Min-K%++
        on the label tokens without the last one ("-1 to ignore eos prediction",
        `src/evals/metrics/utils.py::tokenwise_logprobs` / `tokenwise_vocab_logprobs`); on a
        QA row that last label is the EOS token. Rows of one token keep it (nothing else to
        score).
        """
        n = self.n_tokens                                            # (N,)
        cols = np.arange(self.mask.shape[1])[None, :]                # (1, L)
        mask = self.mask & ((cols < (n - 1)[:, None]) | (n[:, None] <= 1))  # (N, L)
        return TokenScores(self.logprob * mask, self.mu * mask, self.sigma * mask,
                           self.top1 & mask, mask)

    def take(self, index) -> "TokenScores":
        return TokenScores(self.logprob[index], self.mu[index], self.sigma[index],
                           self.top1[index], self.mask[index])


@torch.no_grad()
def batch_token_scores(model, batch: dict) -> tuple[torch.Tensor, ...]:
    """One forward on a right-padded batch; returns (logprob, mu, sigma, top1, mask), each (B, T-1).

    Position t of the outputs scores label token t+1 (HF convention: labels are not shifted).
    """
    logits = model(input_ids=batch["input_ids"],
                   attention_mask=batch["attention_mask"]).logits       # (B, T, V)
    logits = logits[:, :-1]                                             # (B, T-1, V)
    labels = batch["labels"][:, 1:].to(logits.device)                  # (B, T-1)
    mask = labels != -100                                               # (B, T-1)
    logp = torch.log_softmax(logits, dim=-1)                            # (B, T-1, V)
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    p = logp.exp()                                                      # (B, T-1, V)
    mu = (p * logp).sum(-1)                                             # (B, T-1)
    second = (p * logp.square()).sum(-1)                                # (B, T-1)
    sigma = (second - mu.square()).clamp_min(0).sqrt()                  # (B, T-1)
    top1 = logits.argmax(-1) == labels                                  # (B, T-1)
    return picked * mask, mu * mask, sigma * mask, top1 & mask, mask


def _left_align(values: torch.Tensor, mask: torch.Tensor, width: int) -> np.ndarray:
    """Move each row's masked entries to the front (label order kept), zero-pad to `width`."""
    out = np.zeros((values.shape[0], width), dtype=np.float64 if values.is_floating_point()
                   else bool)
    for b in range(values.shape[0]):                                # B small rows, no model call
        row = values[b][mask[b]].double().numpy() if values.is_floating_point() \
            else values[b][mask[b]].numpy()
        out[b, : len(row)] = row
    return out


MAX_BATCH_TOKENS = 4096


def _token_batches(rows, order, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Length-sorted index batches of at most `batch_size` rows and, beyond one row, at most
    `max_tokens` padded tokens: the forward holds several (B, T, V) tensors, so 8 rows of a
    2,048-token MUSE article with a 49k vocabulary would need ~15 GB."""
    out, i = [], 0
    while i < len(order):
        width = len(rows[order[i]]["input_ids"])                    # the longest: sorted
        n = max(1, min(batch_size, max_tokens // max(width, 1)))
        out.append(order[i: i + n])
        i += n
    return out


def score_rows(model, tokenizer, rows: Sequence[dict], *, batch_size: int = 8,
               progress: bool = True, desc: str = "score",
               max_batch_tokens: int = MAX_BATCH_TOKENS) -> TokenScores:
    """Score encoded rows (`encode_qa` / `encode_text` dicts) in length-sorted padded batches.

    Args:
        model: a causal LM in eval mode; its dtype is used as is (fp32 on CPU by default).
        tokenizer: supplies the pad id for `collate`.
        rows: dicts with `input_ids` and `labels` (prompt positions -100).
        batch_size: rows per forward (fewer for long rows, see `max_batch_tokens`).
        max_batch_tokens: padded tokens per forward beyond a single row.

    Returns:
        TokenScores in the order of `rows`.
    """
    if not rows:
        raise ValueError("score_rows got no rows; expected at least one encoded row")
    n_labels = [sum(1 for x in r["labels"][1:] if x != -100) for r in rows]
    width = max(max(n_labels), 1)
    order = np.argsort([-len(r["input_ids"]) for r in rows], kind="stable")
    fields = [np.zeros((len(rows), width)) for _ in range(3)] + \
        [np.zeros((len(rows), width), dtype=bool) for _ in range(2)]
    for idx in tqdm(_token_batches(rows, order, batch_size, max_batch_tokens), desc=desc,
                    disable=not progress, leave=False):
        batch = collate([rows[i] for i in idx], tokenizer)
        batch = {k: (v.to(model.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        out = batch_token_scores(model, batch)
        mask = out[-1].cpu()                                        # (B, T-1)
        for f, values in zip(fields, out):
            f[idx] = _left_align(values.cpu(), mask, width)
    return TokenScores(*fields)


def max_positions(model, default: int = 2048) -> int:
    """The longest sequence the model takes (its position table), else `default`."""
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
               or default)


def score_qa(model, tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int = 512,
             batch_size: int = 8, progress: bool = True, desc: str = "score") -> TokenScores:
    """Score the answer tokens of (question, answer) pairs encoded by `data.encode_qa`."""
    from ..data import encode_qa

    max_length = min(max_length, max_positions(model))
    rows = [encode_qa(tokenizer, q, a, max_length=max_length) for q, a in pairs]
    return score_rows(model, tokenizer, rows, batch_size=batch_size, progress=progress, desc=desc)
