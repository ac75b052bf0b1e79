"""IdkPO and IdkDPO: hand-computed values, the DPO gradient, composition and pairing."""
from __future__ import annotations

import math

import pytest
import torch

from ._objtools import grads, log_sigmoid, table_outputs
from unlearning.objectives import build
from unlearning.objectives.base import seq_logprob

IDK = [[-1.0, -2.0, None], [-0.5, -1.5, -1.0]]             # ell = 1.5, 1.0; s = -3, -3
IDK_REF = [[-2.0, -2.0, None], [-1.0, -1.0, -1.0]]         # s_ref = -4, -3
FORGET = [[-0.2, None, None], [-0.1, -0.3, None]]          # s = -0.2, -0.4
FORGET_REF = [[-0.4, None, None], [-0.2, -0.2, None]]      # s_ref = -0.4, -0.4
RETAIN = [[-3.0, -1.0, None]]                              # ell = 2


def test_idkpo_hand_computed():
    out = {"idk": table_outputs(IDK), "retain": table_outputs(RETAIN)}
    assert build("idkpo")(out).total.item() == pytest.approx((1.5 + 1.0) / 2, abs=1e-12)
    reg = build("idkpo", retain="nll", alpha=0.5)
    assert reg(out).total.item() == pytest.approx(1.25 + 0.5 * 2.0, abs=1e-12)
    assert build("idkpo").splits == ("idk",) and not build("idkpo").needs_ref
    assert reg.splits == ("idk", "retain")


def test_idkdpo_hand_computed():
    beta = 0.1
    out = {"idk": table_outputs(IDK, IDK_REF), "forget": table_outputs(FORGET, FORGET_REF)}
    loss = build("idkdpo", beta=beta)(out)
    # win ratio (idk) - lose ratio (forget), per row
    margins = [(-3.0 - -4.0) - (-0.2 - -0.4), (-3.0 - -3.0) - (-0.4 - -0.4)]   # 0.8, 0.0
    expected = sum(-(2 / beta) * log_sigmoid(beta * m) for m in margins) / 2
    assert loss.total.item() == pytest.approx(expected, abs=1e-12)
    assert loss.terms["forget_nll"].item() == pytest.approx((0.2 + 0.2) / 2, abs=1e-12)


def test_idkdpo_gradient_weights_the_pair_by_2_sigmoid():
    """grad L = -mean_i 2 sigma(-beta m_i) (grad s_w - grad s_l), m the DPO margin."""
    beta = 2.0
    win, lose = table_outputs(IDK, IDK_REF), table_outputs(FORGET, FORGET_REF)
    loss = build("idkdpo", beta=beta)({"idk": win, "forget": lose}).total
    w = [2 / (1 + math.exp(beta * m)) for m in (0.8, 0.0)]
    s_w, s_l = seq_logprob(win.logprobs, win.mask), seq_logprob(lose.logprobs, lose.mask)
    oracle = -(w[0] * (s_w[0] - s_l[0]) + w[1] * (s_w[1] - s_l[1])) / 2
    g = torch.autograd.grad(loss, [win.logits, lose.logits], retain_graph=True)  # logprobs are cached
    g_oracle = torch.autograd.grad(oracle, [win.logits, lose.logits])
    for a, b in zip(g, g_oracle):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_idkdpo_small_beta_is_descent_on_idk_plus_ascent_on_forget(tiny, outputs):
    model, ref = tiny("tiny-llama", 0), tiny("tiny-llama", 1)
    params = list(model.parameters())
    dpo = build("idkdpo", beta=1e-6)
    out = outputs(dpo, model, ref)
    win, lose = out["idk"], out["forget"]
    limit = (seq_logprob(lose.logprobs, lose.mask) - seq_logprob(win.logprobs, win.mask)).mean()
    g = torch.cat([x.flatten() for x in grads(dpo(out).total, params)])
    g_lim = torch.cat([x.flatten() for x in grads(limit, params)])
    assert float((g - g_lim).norm() / g_lim.norm()) < 1e-5


def test_idkdpo_needs_paired_rows_and_a_reference():
    d = build("idkdpo")
    assert d.needs_ref and d.splits == ("forget", "idk")
    out = {"idk": table_outputs(IDK, IDK_REF), "forget": table_outputs(FORGET[:1], FORGET_REF[:1])}
    with pytest.raises(ValueError, match="pairs idk row i with forget row i"):
        d(out)
