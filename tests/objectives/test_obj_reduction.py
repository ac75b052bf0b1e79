"""`loss_reduction`: token (HF's pooled `outputs.loss`, the default) vs sequence (row means).

The oracle for `token` is HF itself: `outputs.loss` of the model called with `labels` (HF
upcasts logits to float32 there, so values agree to float32 precision), and HF's own
`fixed_cross_entropy` on the float64 logits for the gradient (to 1e-10).
"""
from __future__ import annotations

import pytest
import torch
from transformers.loss.loss_utils import fixed_cross_entropy

from unlearning.config import RunConfig
from unlearning.objectives import build
from unlearning.objectives.base import SplitOutputs

from ._objtools import QA, forward, grads, make_batch

ROWS = [[-1.0, -2.0, -3.0, None], [-0.5, None, None, None]]     # 3 and 1 answer tokens
REF = [[-1.5, -1.0, -2.5, None], [-1.0, None, None, None]]


def test_ga_token_is_minus_hf_outputs_loss_on_unequal_lengths(tiny, tok):
    model = tiny()
    batch = make_batch(tok, QA)                                 # right-padded, unequal lengths
    n = (batch["labels"][:, 1:] != -100).sum(-1)
    assert len(set(n.tolist())) > 1
    params = list(model.parameters())
    ga = build("ga")
    loss = ga({"forget": forward(model, batch, reduction="token")}).total
    hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               labels=batch["labels"])
    assert loss.item() == pytest.approx(-hf.loss.item(), rel=1e-6)      # HF computes in fp32
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    hf64 = fixed_cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                               batch["labels"][:, 1:].reshape(-1))      # HF's formula, float64
    assert loss.item() == pytest.approx(-hf64.item(), rel=1e-13)
    for g, h in zip(grads(loss, params), grads(-hf64, params)):
        torch.testing.assert_close(g, h, rtol=0, atol=1e-10)
    # sequence: today's definition, bit for bit
    seq = ga({"forget": forward(model, batch, reduction="sequence")}).total
    out = forward(model, batch)
    old = -(-(out.logprobs * out.mask).sum(-1) / out.mask.sum(-1)).mean()
    assert torch.equal(seq, old)
    assert abs(seq.item() - loss.item()) > 1e-4                        # they do differ here


def _out(table, rows=ROWS, ref=None, reduction="token"):
    return table(rows, ref, reduction=reduction)


def test_token_reduction_of_every_token_level_term_by_hand(table):
    # token NLL pooled: (1 + 2 + 3 + 0.5) / 4 = 1.625; row means: (2 + 0.5) / 2 = 1.25
    pooled, rowmean = 6.5 / 4, 1.25
    for name, sign in (("ga", -1), ("sft", 1)):
        assert build(name)({"forget": _out(table)}).total.item() == pytest.approx(sign * pooled)
        seq = build(name)({"forget": _out(table, reduction="sequence")}).total.item()
        assert seq == pytest.approx(sign * rowmean)
    r = {"retain": _out(table)}
    assert build("retain_nll")(r).total.item() == pytest.approx(pooled)
    assert build("idkpo")({"idk": _out(table)}).total.item() == pytest.approx(pooled)
    # WGA beta = 1: tokens weighted by p: sum p*logp / 4
    import math
    wl = sum(math.exp(v) * v for v in (-1.0, -2.0, -3.0, -0.5)) / 4
    assert build("wga", beta=1.0)({"forget": _out(table)}).total.item() == pytest.approx(wl)
    # NGDiff parts pooled too
    loss = build("ngdiff")({"forget": _out(table), "retain": _out(table)})
    assert loss.parts["forget"].item() == pytest.approx(pooled)
    # retain KL pooled over answer tokens
    kl_tok = lambda p, q: math.exp(q) * (q - p) + (1 - math.exp(q)) * (
        math.log(1 - math.exp(q)) - math.log(1 - math.exp(p)))
    pairs = [(-1.0, -1.5), (-2.0, -1.0), (-3.0, -2.5), (-0.5, -1.0)]
    kl = build("retain_kl")({"retain": _out(table, ref=REF)}).total.item()
    assert kl == pytest.approx(sum(kl_tok(p, q) for p, q in pairs) / 4, rel=1e-12)


def test_sequence_level_losses_ignore_the_reduction(table):
    for name in ("npo", "simnpo"):
        hp = {"retain": "none"} if name == "simnpo" else {}
        a = build(name, **hp)({"forget": _out(table, ref=REF)}).total
        b = build(name, **hp)({"forget": _out(table, ref=REF, reduction="sequence")}).total
        assert torch.equal(a, b)


def test_weights_decompose_the_loss(table):
    loss = build("graddiff", alpha=0.5)({"forget": _out(table), "retain": _out(table)})
    torch.testing.assert_close(loss.weights["forget"], torch.tensor([0.75, 0.25],
                                                                      dtype=torch.float64))
    torch.testing.assert_close(loss.weights["retain"], 0.5 * torch.tensor([0.75, 0.25],
                                                                            dtype=torch.float64))
    seq = build("ga")({"forget": _out(table, reduction="sequence")})
    torch.testing.assert_close(seq.weights["forget"], torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_sga_r0_is_ga_under_token_reduction_bit_for_bit(table):
    f = _out(table)
    normal = _out(table, rows=[[-2.0, None, None, None], [-1.0, -1.0, None, None]])
    sga = build("sga", r=0.0, k=2)({"forget": f, "normal": normal}).total
    assert torch.equal(sga, build("ga")({"forget": f}).total)
    # r = 0.5, K = 2: w_f = 0.75, w_n = 0.25; groups weigh 3/4 and 1/4 (forget tokens)
    sga = build("sga", r=0.5, k=2)({"forget": f, "normal": normal}).total.item()
    per_group = [-0.75 * 2.0 - 0.25 * 2.0, -0.75 * 0.5 - 0.25 * 1.0]
    assert sga == pytest.approx(0.75 * per_group[0] + 0.25 * per_group[1], rel=1e-12)


def test_config_and_outputs_name_the_choices():
    assert RunConfig().loss_reduction == "token"
    with pytest.raises(ValueError, match="config field 'loss_reduction' must be one of \\('token', 'sequence'\\); got"):
        RunConfig(loss_reduction="batch")
    with pytest.raises(ValueError, match=r"loss reduction must be one of \('token', 'sequence'\)"):
        SplitOutputs(logits=torch.zeros(1, 1, 2), labels=torch.zeros(1, 1, dtype=torch.long),
                     reduction="mean")
