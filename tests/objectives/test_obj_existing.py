"""GA, GradDiff, SGA and the compositions: reductions and hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from ._objtools import grads, table_outputs
from unlearning.objectives import SplitOutputs, build
from unlearning.objectives.compose import RetainKL, RetainNLL, Weighted
from unlearning.objectives.ga import GA
from unlearning.objectives.sga import sga_weights

# a 3x5 table of token log-probs: one forget row and K-1 = 2 normal rows (None = masked)
FORGET = [[-1.0, -2.0, -3.0, None, None]]                   # ell_f = 2
NORMAL = [[-1.0, -1.0, -1.0, -1.0, -1.0],                   # ell = 1
          [-2.0, -4.0, -6.0, None, None]]                   # ell = 4


def sga_table_loss(r: float, convention: str) -> float:
    out = {"forget": table_outputs(FORGET), "normal": table_outputs(NORMAL)}
    return build("sga", r=r, k=3, convention=convention)(out).total.item()


@pytest.mark.parametrize("r, convention, expected", [
    # w_f = 1 - r + r/3, w_n = r/3; gls: -(w_f*2 + w_n*(1+4)); split: -w_f*2 + w_n*(1+4)
    (0.6, "gls", -(0.6 * 2 + 0.2 * 5)),      # -2.2
    (0.6, "split", -0.6 * 2 + 0.2 * 5),      # -0.2
    (-0.6, "gls", -(1.4 * 2 - 0.2 * 5)),     # -1.8  (negative smoothing)
    (1.0, "split", -(1 / 3) * 2 + (1 / 3) * 5),
])
def test_sga_hand_computed_table(r, convention, expected):
    assert sga_table_loss(r, convention) == pytest.approx(expected, abs=1e-12)


def test_sga_conventions_differ_by_twice_the_normal_term():
    r = 0.6
    _, w_n = sga_weights(r, 3)
    diff = sga_table_loss(r, "split") - sga_table_loss(r, "gls")
    assert diff == pytest.approx(2 * w_n * (1 + 4), abs=1e-12)
    assert w_n == pytest.approx(0.2)


def test_sga_r0_equals_ga_exactly_on_a_tiny_model(tiny, batches, outputs):
    model = tiny()
    params = [p for p in model.parameters()]
    ga = GA()
    sga = build("sga", r=0.0, k=2, convention="gls")
    out = outputs(ga, model)
    ga_loss = ga(out).total
    ga_grad = grads(ga_loss, params)
    sga_out = {"forget": out["forget"], "normal": outputs(RetainNLL(), model)["retain"]}
    for conv in ("gls", "split"):
        sga_loss = build("sga", r=0.0, k=2, convention=conv)(sga_out).total
        assert torch.equal(sga_loss, ga_loss)
        for g1, g2 in zip(grads(sga_loss, params), ga_grad):
            assert torch.equal(g1, g2)
    assert sga.splits == ("forget", "normal") and not sga.needs_ref


def test_sga_rejects_wrong_number_of_normal_rows():
    out = {"forget": table_outputs(FORGET), "normal": table_outputs(NORMAL[:1])}
    with pytest.raises(ValueError, match="expects 2 normal rows"):
        build("sga", r=0.5, k=3)(out)


def test_ga_hand_computed():
    out = {"forget": table_outputs(FORGET + NORMAL)}        # ell = 2, 1, 4
    loss = GA()(out)
    assert loss.total.item() == pytest.approx(-(2 + 1 + 4) / 3, abs=1e-12)
    assert loss.terms["forget_nll"].item() == pytest.approx(7 / 3, abs=1e-12)


def test_graddiff_alpha0_equals_ga(tiny, outputs):
    model = tiny()
    params = list(model.parameters())
    for retain in ("nll", "kl"):
        gd = build("graddiff", alpha=0.0, retain=retain)
        assert not gd.needs_ref
        out = outputs(gd, model)                  # no reference outputs at all
        gd_loss, ga_loss = gd(out).total, GA()(out).total
        assert torch.equal(gd_loss, ga_loss)
        for g1, g2 in zip(grads(gd_loss, params), grads(ga_loss, params)):
            assert torch.equal(g1, g2)


def test_graddiff_hand_computed():
    out = {"forget": table_outputs(FORGET), "retain": table_outputs(NORMAL)}
    loss = build("graddiff", alpha=0.5, retain="nll")(out)
    assert loss.total.item() == pytest.approx(-2 + 0.5 * (1 + 4) / 2, abs=1e-12)
    assert set(loss.terms) >= {"ga", "retain_nll", "ga/forget_nll"}


def bernoulli_kl(q: float, p: float) -> float:
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def test_retain_kl_hand_computed_over_answer_tokens_only():
    # theta's table and the reference's; KL(p_ref || p_theta) per token, mean per row
    theta = [[-1.0, -2.0, None], [-0.5, None, None]]
    ref = [[-1.5, -1.0, -0.1], [-0.5, -3.0, -3.0]]          # masked columns differ on purpose
    out = {"retain": table_outputs(theta, ref)}
    kl = RetainKL()(out).total.item()
    e = math.exp
    row0 = (bernoulli_kl(e(-1.5), e(-1.0)) + bernoulli_kl(e(-1.0), e(-2.0))) / 2
    row1 = bernoulli_kl(e(-0.5), e(-0.5))                    # = 0
    assert kl == pytest.approx((row0 + row1) / 2, abs=1e-12)
    assert row1 == 0.0


def test_retain_kl_is_zero_against_itself_and_needs_ref():
    rows = [[-1.0, -2.0, None]]
    assert RetainKL()({"retain": table_outputs(rows, rows)}).total.item() == pytest.approx(0, abs=1e-15)
    assert RetainKL.needs_ref and not RetainNLL.needs_ref


def test_retain_kl_without_reference_raises_a_clear_error():
    with pytest.raises(ValueError, match="needs_ref"):
        RetainKL()({"retain": table_outputs([[-1.0, -2.0, None]])})


def test_weighted_skips_zero_weight_parts_and_names_terms():
    out = {"forget": table_outputs(FORGET), "retain": table_outputs(NORMAL)}
    w = Weighted(((1.0, GA()), (0.0, RetainKL()), (2.0, RetainNLL())))
    loss = w(out)                                           # RetainKL would raise: no ref
    assert loss.total.item() == pytest.approx(-2 + 2 * 2.5, abs=1e-12)
    assert set(loss.terms) == {"ga", "ga/forget_nll", "retain_nll"}
    assert w.splits == ("forget", "retain") and w.needs_ref   # declared, though weight 0


def test_rows_without_answer_tokens_raise():
    out = SplitOutputs(logits=torch.zeros(1, 2, 3), labels=torch.full((1, 2), -100))
    with pytest.raises(ValueError, match="no answer tokens"):
        out.nll
