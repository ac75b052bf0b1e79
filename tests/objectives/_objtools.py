"""Plain helpers for the objective tests (imported by conftest and by test modules).

`table_outputs(rows)` turns a table of token log-probs (None = masked) into a `SplitOutputs`
whose `logprobs` are exactly those numbers: a 2-token vocabulary with logits
(log p, log(1 - p)) and label 0 has log_softmax = (log p, log(1 - p)). `forward(model, batch)`
is the engine's own `split_outputs` (logits shifted by one, labels[:, 1:], full-length
hidden states), so the objective tests see exactly what training sees.

Both default to `reduction="sequence"` (row means, the definition the hand-computed values
of the original tests were written for); `test_obj_reduction.py` checks the `token` default
of the engine against HF's pooled loss.
"""
from __future__ import annotations

import math

import torch

from unlearning.data import collate, encode_qa
from unlearning.objectives import SplitOutputs

QA = [("Who wrote the Book of Sand?", "Jorge Luis Borges wrote it in 1975."),
      ("Where was Elena Ferrante born?", "In Naples, according to her publisher."),
      ("What is the capital of Atlantis?", "Poseidonia, a city under the sea.")]
RETAIN_QA = [("What colour is the sky?", "Blue on a clear day."),
             ("How many legs has a spider?", "Eight legs."),
             ("What is two plus two?", "Four.")]
IDK = ["I have no idea.", "I'm not sure about that.", "That is beyond my knowledge."]


def _logits(rows, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    lp = torch.tensor([[-1.0 if v is None else v for v in row] for row in rows], dtype=dtype)
    if bool((lp >= 0).any()):
        raise ValueError("table log-probs must be < 0")
    labels = torch.tensor([[-100 if v is None else 0 for v in row] for row in rows])  # (B, T)
    logits = torch.stack([lp, torch.log(-torch.expm1(lp))], dim=-1)    # (B, T, 2)
    return logits, labels


def table_outputs(rows, ref_rows=None, dtype=torch.float64, reduction="sequence") -> SplitOutputs:
    """SplitOutputs with leaf logits (requires_grad) whose logprobs are the table's numbers."""
    logits, labels = _logits(rows, dtype)
    ref = None if ref_rows is None else _logits(ref_rows, dtype)[0]
    return SplitOutputs(logits=logits.requires_grad_(), labels=labels, ref_logits=ref,
                        reduction=reduction)


def make_batch(tok, pairs) -> dict:
    rows = [{**encode_qa(tok, q, a, max_length=96), "instance_id": f"i{j}"}
            for j, (q, a) in enumerate(pairs)]
    return collate(rows, tok)


def forward(model, batch, hidden_layers=(), ref=None, reduction="sequence") -> SplitOutputs:
    """One forward exactly as the engine does it (its own function): logits[:, :-1] predict
    labels[:, 1:]."""
    from unlearning.engine import split_outputs

    return split_outputs(model, batch, hidden_layers, ref, reduction)


def grads(loss, params) -> list[torch.Tensor]:
    """d loss / d params (zeros where unused); the graph is kept for further calls."""
    gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, params)]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))
