"""NPO and SimNPO: hand-computed values, the beta -> 0 limit, compositions."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from ._objtools import grads, log_sigmoid, table_outputs
from unlearning.objectives import build
from unlearning.objectives.base import seq_logprob

THETA = [[-1.0, -2.0, None], [-0.5, -0.5, -0.5]]           # s = -3.0, -1.5
REF = [[-0.5, -0.5, None], [-1.0, -1.0, -1.0]]             # s_ref = -1.0, -3.0
RETAIN = [[-1.0, -3.0, None]]                              # ell = 2


def test_npo_hand_computed():
    beta = 0.1
    loss = build("npo", beta=beta)({"forget": table_outputs(THETA, REF)})
    rows = [-(2 / beta) * log_sigmoid(-beta * d) for d in (-3.0 - -1.0, -1.5 - -3.0)]
    assert loss.total.item() == pytest.approx(sum(rows) / 2, abs=1e-12)
    assert loss.terms["npo/log_ratio"].item() == pytest.approx((-2.0 + 1.5) / 2, abs=1e-12)


def test_npo_gradient_weights_rows_by_2_sigmoid():
    """grad L_NPO = mean_i 2 sigma(beta (s_i - s_ref,i)) grad s_i (Zhang et al., Eq. 4)."""
    beta = 0.7
    out = table_outputs(THETA, REF)
    loss = build("npo", beta=beta)({"forget": out}).total
    s = seq_logprob(out.logprobs, out.mask)
    w = [2 / (1 + math.exp(-beta * d)) for d in (-2.0, 1.5)]
    oracle = (w[0] * s[0] + w[1] * s[1]) / 2
    (g,) = torch.autograd.grad(loss, out.logits, retain_graph=True)   # logprobs are cached
    (g_oracle,) = torch.autograd.grad(oracle, out.logits)
    torch.testing.assert_close(g, g_oracle, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_npo_gradient_tends_to_ga_on_sequence_sums(tiny, outputs, name):
    model, ref = tiny(name, seed=0), tiny(name, seed=1)
    params = list(model.parameters())
    npo_small, npo_one = build("npo", beta=1e-6), build("npo", beta=1.0)
    out = outputs(npo_small, model, ref)
    f = out["forget"]
    ga_seq = seq_logprob(f.logprobs, f.mask).mean()          # minimising it = GA on sums
    g_ga = torch.cat([g.flatten() for g in grads(ga_seq, params)])
    g_small = torch.cat([g.flatten() for g in grads(npo_small(out).total, params)])
    g_one = torch.cat([g.flatten() for g in grads(npo_one(out).total, params)])
    rel = lambda g: float((g - g_ga).norm() / g_ga.norm())
    assert rel(g_small) < 1e-5
    assert rel(g_one) > 1e-3                                  # beta = 1 is really different


def test_npo_with_itself_as_reference_has_unit_weights():
    """s = s_ref gives W = 2 sigma(0) = 1: the gradient is GA's on sums for every beta."""
    out = table_outputs(THETA, THETA)
    for beta in (0.1, 3.0):
        loss = build("npo", beta=beta)({"forget": out}).total
        assert loss.item() == pytest.approx(-(2 / beta) * math.log(0.5), abs=1e-12)
        (g,) = torch.autograd.grad(loss, out.logits, retain_graph=True)   # logprobs are cached
        (g_sum,) = torch.autograd.grad(seq_logprob(out.logprobs, out.mask).mean(), out.logits,
                                       retain_graph=True)
        torch.testing.assert_close(g, g_sum, rtol=1e-12, atol=1e-14)


def test_npo_rt_and_kl_are_compositions():
    beta, alpha = 0.1, 0.5
    out = {"forget": table_outputs(THETA, REF), "retain": table_outputs(RETAIN, RETAIN)}
    pure = build("npo", beta=beta)(out).total.item()
    rt = build("npo", beta=beta, retain="nll", alpha=alpha)
    loss = rt(out)
    assert loss.total.item() == pytest.approx(pure + alpha * 2.0, abs=1e-12)
    assert set(loss.terms) >= {"npo", "retain_nll", "forget_nll"}
    assert rt.splits == ("forget", "retain") and rt.needs_ref
    kl = build("npo", beta=beta, retain="kl", alpha=alpha)
    assert kl(out).total.item() == pytest.approx(pure, abs=1e-12)   # KL to itself is 0
    assert build("npo").splits == ("forget",)


def test_npo_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="retain term must be one of"):
        build("npo", retain="l2")
    with pytest.raises(ValueError, match="beta > 0"):
        build("npo", beta=0.0)


def test_simnpo_hand_computed():
    beta, gamma, lam = 2.5, 0.5, 0.25
    forget = [[-1.0, -2.0, -3.0], [-1.0, None, None]]        # ell = 2, 1
    out = {"forget": table_outputs(forget), "retain": table_outputs(RETAIN)}
    loss = build("simnpo", beta=beta, gamma=gamma, lam=lam, forget_weight=1.0)(out)
    rows = [-(2 / beta) * log_sigmoid(beta * ell - gamma) for ell in (2.0, 1.0)]
    assert loss.total.item() == pytest.approx(sum(rows) / 2 + lam * 2.0, abs=1e-12)
    # the authors' TOFU forget coefficient (Unlearn-Simple TOFU/config/forget.yaml npo_coeff)
    loss = build("simnpo", beta=beta, gamma=gamma, lam=lam)(out)
    assert loss.total.item() == pytest.approx(0.1375 * sum(rows) / 2 + lam * 2.0, abs=1e-12)
    assert loss.terms["forget_nll"].item() == pytest.approx(1.5, abs=1e-12)


def test_simnpo_is_reference_free_unless_kl():
    assert not build("simnpo").needs_ref
    assert build("simnpo").splits == ("forget", "retain")
    assert build("simnpo", retain="none").splits == ("forget",)
    assert build("simnpo", lam=0.0).splits == ("forget",)
    assert build("simnpo", retain="kl").needs_ref


def test_simnpo_equals_npo_on_length_normalised_logp_with_zero_reference():
    """SimNPO(gamma=0) is NPO with s/|y| in place of s and s_ref = 0 (Fan et al., Sec. 4)."""
    beta = 1.3
    out = table_outputs(THETA)
    sim = build("simnpo", beta=beta, retain="none", forget_weight=1.0)({"forget": out}).total.item()
    npo_rows = [-(2 / beta) * log_sigmoid(-beta * s) for s in (-3.0 / 2, -1.5 / 3)]
    assert sim == pytest.approx(sum(npo_rows) / 2, abs=1e-12)


def test_npo_loss_on_tiny_model_matches_a_row_loop(tiny, outputs):
    model, ref = tiny("tiny-llama", 0), tiny("tiny-llama", 2)
    npo = build("npo", beta=0.1)
    out = outputs(npo, model, ref)["forget"]
    total = npo({"forget": out}).total.item()
    rows = []
    for i in range(out.labels.shape[0]):                       # slow loop, token by token
        s = s_ref = 0.0
        for t in range(out.labels.shape[1]):
            y = int(out.labels[i, t])
            if y != -100:
                s += float(torch.log_softmax(out.logits[i, t].detach(), -1)[y])
                s_ref += float(torch.log_softmax(out.ref_logits[i, t], -1)[y])
        rows.append(-(2 / 0.1) * log_sigmoid(-0.1 * (s - s_ref)))
    assert total == pytest.approx(sum(rows) / len(rows), rel=1e-10)
    assert copy.deepcopy(npo) == npo
