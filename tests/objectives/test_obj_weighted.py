"""Token-weighted ascent: WGA (Eq. 2), TNPO (Eq. 6), WTNPO of Wang et al. 2025."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ._objtools import grads, log_sigmoid, table_outputs
from unlearning.objectives import build
from unlearning.objectives.ga import GA
from unlearning.objectives.tnpo import tnpo_weight

THETA = [[-1.0, -2.0, -3.0], [-0.5, None, None]]
REF = [[-2.0, -1.0, -3.0], [-0.1, -5.0, -5.0]]             # masked columns do not matter


def weighted_rows(weights, rows) -> float:
    """mean over rows of (1/|y|) sum_t w_t log p_t, plain Python."""
    per_row = []
    for w_row, lp_row in zip(weights, rows):
        pairs = [(w, lp) for w, lp in zip(w_row, lp_row) if lp is not None]
        per_row.append(sum(w * lp for w, lp in pairs) / len(pairs))
    return sum(per_row) / len(per_row)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_wga_beta0_is_ga(tiny, outputs, name):
    model = tiny(name)
    params = list(model.parameters())
    out = outputs(GA(), model)
    wga, ga = build("wga", beta=0.0)(out).total, GA()(out).total
    torch.testing.assert_close(wga, ga, rtol=1e-14, atol=1e-14)
    for g1, g2 in zip(grads(wga, params), grads(ga, params)):
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)


def test_wga_hand_computed():
    for beta in (1.0, 2.0):
        w = [[math.exp(beta * lp) if lp is not None else 0 for lp in row] for row in THETA]
        loss = build("wga", beta=beta)({"forget": table_outputs(THETA)})
        assert loss.total.item() == pytest.approx(weighted_rows(w, THETA), abs=1e-12)


def test_wga_weight_carries_no_gradient():
    """d L / d log p_t = p_t^beta / (|y| B): the weight is a constant (Eq. 2's detach)."""
    out = table_outputs(THETA)
    loss = build("wga", beta=1.0)({"forget": out}).total
    w = out.logprobs.detach().exp()
    oracle = ((w * out.logprobs * out.mask).sum(-1) / out.mask.sum(-1)).mean()
    (g,) = torch.autograd.grad(loss, out.logits, retain_graph=True)     # logprobs are cached
    (g_oracle,) = torch.autograd.grad(oracle, out.logits)
    torch.testing.assert_close(g, g_oracle, rtol=1e-12, atol=1e-14)


def test_tnpo_weights_are_one_when_ref_equals_theta():
    lp = torch.tensor([[-0.1, -2.0, -30.0]], dtype=torch.float64)
    for beta in (0.1, 1.0, 5.0):
        assert torch.equal(tnpo_weight(lp, lp, beta), torch.ones_like(lp))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_tnpo_with_ref_equal_to_theta_is_ga(tiny, outputs, name):
    model = tiny(name)
    ref = copy.deepcopy(model)
    params = list(model.parameters())
    tnpo = build("tnpo", beta=0.1)
    out = outputs(tnpo, model, ref)
    loss, ga = tnpo(out).total, GA()(out).total
    torch.testing.assert_close(loss, ga, rtol=1e-14, atol=1e-14)
    for g1, g2 in zip(grads(loss, params), grads(ga, params)):
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)


def test_tnpo_and_wtnpo_hand_computed():
    beta, alpha = 0.5, 1.5
    tn, wtn = [], []
    for row, ref_row in zip(THETA, REF):
        tn.append([]), wtn.append([])
        for lp, lq in zip(row, ref_row):
            p, q = math.exp(lp if lp is not None else -1.0), math.exp(lq)
            tn[-1].append(2 * p ** beta / (p ** beta + q ** beta))
            wtn[-1].append(2 * p ** (beta + alpha) / (p ** beta + q ** beta))
    out = {"forget": table_outputs(THETA, REF)}
    assert build("tnpo", beta=beta)(out).total.item() == pytest.approx(weighted_rows(tn, THETA), abs=1e-12)
    wt = build("wtnpo", beta=beta, alpha=alpha)(out)
    assert wt.total.item() == pytest.approx(weighted_rows(wtn, THETA), abs=1e-12)
    assert wt.terms["forget_nll"].item() == pytest.approx((2.0 + 0.5) / 2, abs=1e-12)


def test_tnpo_gradient_is_token_wise_npo_gradient():
    """grad of sum_t -(2/beta) log sigma(-beta (log p_t - log p_ref,t)) = TNPO's (Eq. 6)."""
    beta = 0.8
    out = table_outputs(THETA, REF)
    loss = build("tnpo", beta=beta)({"forget": out}).total
    ratio = out.logprobs - out.ref_logprobs                               # (B, T)
    tok = -(2 / beta) * F.logsigmoid(-beta * ratio) * out.mask           # (B, T)
    oracle = (tok.sum(-1) / out.mask.sum(-1)).mean()
    (g,) = torch.autograd.grad(loss, out.logits, retain_graph=True)     # logprobs are cached
    (g_oracle,) = torch.autograd.grad(oracle, out.logits)
    torch.testing.assert_close(g, g_oracle, rtol=1e-12, atol=1e-14)
    # the sequence-level NPO of this table differs (weights per row, not per token)
    npo = build("npo", beta=beta)({"forget": table_outputs(THETA, REF)})
    assert abs(npo.total.item() - (-(2 / beta) * (log_sigmoid(-beta * 0.0) + log_sigmoid(beta * 0.4)) / 2)) < 1e-12


def test_wtnpo_alpha0_is_tnpo_and_regularisers_use_lam():
    out = {"forget": table_outputs(THETA, REF), "retain": table_outputs([[-2.0, None, None]])}
    assert build("wtnpo", beta=0.3, alpha=0.0)(out).total.item() == pytest.approx(
        build("tnpo", beta=0.3)(out).total.item(), abs=1e-14)
    w = build("wtnpo", retain="nll", lam=0.5)
    assert w(out).total.item() == pytest.approx(build("wtnpo")(out).total.item() + 0.5 * 2.0, abs=1e-12)
    assert build("tnpo", retain="nll", lam=0.5)(out).total.item() == pytest.approx(
        build("tnpo")(out).total.item() + 0.5 * 2.0, abs=1e-12)


def test_reference_needs():
    assert not build("wga").needs_ref and build("wga", retain="kl").needs_ref
    assert build("tnpo").needs_ref and build("wtnpo").needs_ref
    assert build("wga").splits == ("forget",)
