"""NGDiff (Bu et al. 2024): the normalized direction, its first-order guarantees, GeN."""
from __future__ import annotations

import pytest
import torch

from ._objtools import grads
from unlearning.objectives import OwnsUpdate, build
from unlearning.objectives.ngdiff import gen_rate, normalized_difference


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def direction_on_tiny(tiny, outputs, name):
    model = tiny(name)
    params = list(model.parameters())
    ng = build("ngdiff")
    loss = ng(outputs(ng, model))
    g_f = flat(grads(loss.parts["forget"], params))
    g_r = flat(grads(loss.parts["retain"], params))
    ng.backward(loss, params)
    d = flat([p.grad for p in params])
    return model, params, ng, d, g_f, g_r


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2-untied"])
def test_direction_is_the_normalized_difference(tiny, outputs, name):
    _, _, ng, d, g_f, g_r = direction_on_tiny(tiny, outputs, name)
    expected = g_r / g_r.norm() - g_f / g_f.norm()           # one flat vector: slow, obvious
    torch.testing.assert_close(d, expected, rtol=1e-12, atol=1e-15)
    assert isinstance(ng, OwnsUpdate) and not ng.needs_ref


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_step_never_raises_retain_nor_lowers_forget_to_first_order(tiny, outputs, name):
    _, params, ng, d, g_f, g_r = direction_on_tiny(tiny, outputs, name)
    cos = float(g_r @ g_f / (g_r.norm() * g_f.norm()))
    # theta - eta d changes L_R by -eta d.g_R and L_F by -eta d.g_F
    assert float(d @ g_r) == pytest.approx(float(g_r.norm()) * (1 - cos), rel=1e-10)
    assert float(d @ g_f) == pytest.approx(-float(g_f.norm()) * (1 - cos), rel=1e-10)
    assert float(d @ g_r) >= 0 and float(d @ g_f) <= 0
    assert abs(cos) < 1                                       # a genuine two-task case


def test_small_step_moves_both_losses_the_right_way(tiny, outputs):
    model, params, ng, d, _, _ = direction_on_tiny(tiny, outputs, "tiny-llama")
    before = ng(outputs(ng, model))
    with torch.no_grad():
        for p in params:
            p.sub_(1e-4 * p.grad)
    after = ng(outputs(ng, model))
    assert after.parts["retain"].item() < before.parts["retain"].item()
    assert after.parts["forget"].item() > before.parts["forget"].item()


def test_normalized_difference_handles_a_zero_gradient():
    g = [torch.tensor([3.0, 4.0], dtype=torch.float64)]
    zero = [torch.zeros(2, dtype=torch.float64)]
    assert normalized_difference(g, zero)[0].tolist() == [0.6, 0.8]
    assert normalized_difference(zero, g)[0].tolist() == [-0.6, -0.8]


def test_backward_needs_both_parts():
    from unlearning.objectives import Loss
    with pytest.raises(ValueError, match="missing \\['retain'\\]"):
        build("ngdiff").backward(Loss(total=torch.zeros(()), parts={"forget": torch.zeros(())}), [])


def test_loss_is_retain_minus_forget_nll(table):
    out = {"forget": table([[-1.0, -3.0, None]]), "retain": table([[-0.5, None, None]])}
    loss = build("ngdiff")(out)
    assert loss.total.item() == pytest.approx(0.5 - 2.0, abs=1e-12)
    assert loss.parts["forget"].item() == pytest.approx(2.0, abs=1e-12)


# ---- GeN -----------------------------------------------------------------------------------

def parabola(eta: float) -> float:
    """loss_at(eta) = L(theta - eta d) = 3 - 2 eta + 5 eta^2: minimum at eta* = 2/10."""
    return 3.0 - 2.0 * eta + 5.0 * eta ** 2


def test_gen_rate_matches_the_hand_computed_parabola():
    eta = 0.05
    l0, l_plus, l_minus = parabola(0.0), parabola(-eta), parabola(eta)   # L(theta +- eta d)
    assert (l_plus, l_minus) == pytest.approx((3.1125, 2.9125))
    # (eta/2)(L+ - L-)/(L+ - 2 L0 + L-) = 0.025 * 0.2 / 0.025
    assert gen_rate(eta, l0, l_plus, l_minus) == pytest.approx(0.2, rel=1e-12)
    assert gen_rate(eta, 3.0, 2.0, 2.0) is None                             # concave
    assert gen_rate(eta, 3.0, 3.0, 3.0) is None                             # flat
    assert gen_rate(eta, 3.0, float("nan"), 3.5) is None
    # opens upwards but the loss RISES along the step (minimum at a negative rate): GeN's
    # lr_parabola rejects it (`Gg > 0` fails); the old code clamped it to lr_min
    assert gen_rate(eta, 3.0, 2.9125, 3.1125) is None


def test_learning_rate_every_phi_steps_clipped_and_with_fallback():
    calls = []

    def loss_at(eta):
        calls.append(eta)
        return parabola(eta)

    plain = dict(smooth=0.0, max_change=float("inf"))     # the bare parabola step
    ng = build("ngdiff", phi=3, lr_min=1e-3, lr_max=1.0, **plain)
    assert ng.learning_rate(0, 0.05, loss_at) == pytest.approx(0.2, rel=1e-12)
    assert sorted(calls) == pytest.approx([-0.05, 0.0, 0.05])
    calls.clear()
    assert ng.learning_rate(1, 0.05, loss_at) == pytest.approx(0.2)   # held between GeN steps
    assert ng.learning_rate(2, 0.05, loss_at) == pytest.approx(0.2)
    assert calls == []
    assert ng.learning_rate(3, 0.05, loss_at) == pytest.approx(0.2)   # probed at 0.2 now
    assert sorted(calls) == pytest.approx([-0.2, 0.0, 0.2])
    capped = build("ngdiff", phi=1, lr_min=1e-3, lr_max=0.1, **plain)
    assert capped.learning_rate(0, 0.05, parabola) == pytest.approx(0.1)
    # a fit whose minimum lies behind (negative rate) is rejected and the rate kept (issue 11:
    # the old code clamped it to lr_min)
    wrong = build("ngdiff", phi=1, lr_min=1e-3, lr_max=1.0)
    assert wrong.learning_rate(0, 0.05, lambda e: 3.0 + 2.0 * e + 5 * e ** 2) == 0.05
    concave = build("ngdiff", phi=1)
    assert concave.learning_rate(0, 0.05, lambda e: 3.0 - e ** 2) == 0.05  # previous rate kept
    fixed = build("ngdiff", adaptive=False)
    assert fixed.learning_rate(0, 0.05, parabola) == 0.05


def test_gen_on_a_quadratic_is_the_exact_line_search_step():
    """L(x) = x'Ax/2 - b'x with d = grad in `.grad`, moved as the engine's `loss_at` does:
    the minimum of L(x - s d) is s* = d'd / d'Ad, hand-computed here as 2/6."""
    a = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -1.0], dtype=torch.float64)
    x = torch.nn.Parameter(torch.tensor([1.0, 0.0], dtype=torch.float64))
    loss = lambda: float(0.5 * x @ a @ x - b @ x)
    x.grad = (a @ x - b).detach()                           # (1, 1): d'd = 2, d'Ad = 2 + 4
    assert float(x.grad @ x.grad) / float(x.grad @ a @ x.grad) == pytest.approx(2 / 6)

    @torch.no_grad()
    def loss_at(eta):
        saved = x.clone()
        x.sub_(eta * x.grad)
        value = loss()
        x.copy_(saved)
        return value

    ng = build("ngdiff", phi=1, lr_min=1e-6, lr_max=10.0, smooth=0.0, max_change=float("inf"))
    eta = ng.learning_rate(0, 0.01, loss_at)
    assert eta == pytest.approx(1 / 3, rel=1e-10)
    assert loss_at(eta) < loss_at(0.9 * eta) and loss_at(eta) < loss_at(1.1 * eta)


def test_gen_update_is_the_packages_bounded_smoothed_step():
    """gen-optim 0.1.1 `lr_parabola`: lr <- 0.9 lr + 0.1 clip(opt, lr/2, 2 lr)."""
    ng = build("ngdiff", phi=1, lr_min=1e-7, lr_max=1.0)
    # parabola's optimum 0.2 from lr 0.05: clipped to 0.1, smoothed: 0.9*0.05 + 0.1*0.1
    assert ng.learning_rate(0, 0.05, parabola) == pytest.approx(0.055, rel=1e-12)
    # next probe at 0.055, optimum still 0.2 -> 0.9*0.055 + 0.1*0.11
    assert ng.learning_rate(1, 0.05, parabola) == pytest.approx(0.0605, rel=1e-12)
    # an optimum far below: clipped to lr/2 -> 0.9 lr + 0.05 lr = 0.95 lr
    down = build("ngdiff", phi=1)
    assert down.learning_rate(0, 0.01, lambda e: 3.0 - 2e-4 * e + 5 * e ** 2) == \
        pytest.approx(0.0095, rel=1e-12)
    with pytest.raises(ValueError, match="smooth"):
        build("ngdiff", smooth=1.0)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="phi"):
        build("ngdiff", phi=0)
    with pytest.raises(ValueError, match="lr_min <= lr_max"):
        build("ngdiff", lr_min=1.0, lr_max=0.1)
