"""Label log-probs by one fused cross-entropy, cached per split, and the KL without a kept
log-softmax: the same values and gradients as the full-vocabulary formulas (float64 oracles)."""
import pytest
import torch

from unlearning.objectives import SplitOutputs, base, build
from unlearning.objectives.base import answer_kl, token_logprobs


def old_token_logprobs(logits, labels):
    """The formula before issue 17 (the oracle): full log-softmax, gather, mask."""
    mask = labels != -100                                           # (B, T)
    logp = torch.log_softmax(logits, dim=-1)                        # (B, T, V)
    return logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask


def old_answer_kl(logits, ref_logits, mask):
    """The formula before issue 17 (the oracle)."""
    logp = torch.log_softmax(logits, dim=-1)                        # (B, T, V)
    logq = torch.log_softmax(ref_logits, dim=-1)                    # (B, T, V)
    kl = (logq.exp() * (logq - logp)).sum(-1)                       # (B, T)
    return (kl * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def random_case(seed, b=3, t=6, v=11, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(b, t, v, generator=g, dtype=torch.float64))   # (B, T, V)
    ref = logits + torch.randn(b, t, v, generator=g, dtype=torch.float64)        # (B, T, V)
    labels = torch.randint(0, v, (b, t), generator=g)                           # (B, T)
    labels[0, :2] = -100
    labels[1, -1] = -100
    labels[2, :] = -100                                   # a row with no answer token
    return logits, ref, labels


def value_and_grad(f, logits, *args):
    x = logits.clone().requires_grad_()
    y = f(x, *args)                                                  # (B, T) or (B,)
    weights = torch.linspace(-1, 2, y.numel(), dtype=y.dtype).view_as(y)
    (g,) = torch.autograd.grad((weights * y).sum(), x)
    return y.detach(), g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_logprobs_equal_the_log_softmax_gather_formula(seed):
    logits, _, labels = random_case(seed)
    y, g = value_and_grad(token_logprobs, logits, labels)
    y_old, g_old = value_and_grad(old_token_logprobs, logits, labels)
    torch.testing.assert_close(y, y_old, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(g, g_old, rtol=1e-12, atol=1e-14)
    assert bool((y[labels == -100] == 0).all())


def test_token_logprobs_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match=r"logits \(B, T, V\) and labels \(B, T\)"):
        token_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("seed", [0, 1])
def test_answer_kl_equals_the_log_softmax_formula(seed):
    logits, ref, labels = random_case(seed)
    mask = labels != -100
    y, g = value_and_grad(answer_kl, logits, ref, mask)
    y_old, g_old = value_and_grad(old_answer_kl, logits, ref, mask)
    torch.testing.assert_close(y, y_old, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, g_old, rtol=1e-12, atol=1e-14)
    assert torch.equal(answer_kl(ref, ref, mask), torch.zeros(3, dtype=torch.float64))


def test_label_logprobs_are_computed_once_per_split(monkeypatch):
    """An objective that reads logprobs, ref_logprobs and nll (NPO) pays one cross-entropy
    per logits tensor; a later no-grad read (the engine's monitoring) reuses them."""
    calls = []
    real = base.token_logprobs
    monkeypatch.setattr(base, "token_logprobs", lambda lg, lb: calls.append(lg) or real(lg, lb))
    logits, ref, labels = random_case(0)
    labels[2, 3] = 4                                      # every row has an answer token
    out = SplitOutputs(logits=logits.requires_grad_(), labels=labels, ref_logits=ref)
    loss = build("npo")({"forget": out})
    with torch.no_grad():
        out.nll.mean()
    assert len(calls) == 2 and calls[0] is logits and calls[1] is ref
    (g,) = torch.autograd.grad(loss.total, logits)
    fresh = SplitOutputs(logits=logits, labels=labels, ref_logits=ref)
    monkeypatch.setattr(base, "token_logprobs", old_token_logprobs)
    (g_old,) = torch.autograd.grad(build("npo")({"forget": fresh}).total, logits)
    torch.testing.assert_close(g, g_old, rtol=1e-12, atol=1e-14)


def test_a_no_grad_read_does_not_stand_in_for_a_graph():
    logits, _, labels = random_case(1)
    out = SplitOutputs(logits=logits.requires_grad_(), labels=labels)
    with torch.no_grad():
        first = out.logprobs
    assert not first.requires_grad
    assert out.logprobs.requires_grad                     # recomputed with its graph
    assert out.logprobs is out.logprobs                   # and cached from then on


def test_shifted_outputs_give_the_sliced_logprobs_and_gradients():
    """SplitOutputs.shifted (the engine's) computes on the full logits with shifted labels:
    same values and gradients as the old formula on logits[:, :-1] and labels[:, 1:]."""
    logits, ref, labels = random_case(3, t=7)
    full = logits.clone().requires_grad_()
    out = SplitOutputs.shifted(full, labels, ref)
    assert out.logits.shape == (3, 6, 11) and torch.equal(out.labels, labels[:, 1:])
    weights = torch.linspace(-1, 2, 18, dtype=torch.float64).view(3, 6)
    (g,) = torch.autograd.grad((weights * out.logprobs).sum(), full)
    x = logits.clone().requires_grad_()
    want = old_token_logprobs(x[:, :-1], labels[:, 1:])                  # (B, T)
    (g_old,) = torch.autograd.grad((weights * want).sum(), x)
    torch.testing.assert_close(out.logprobs.detach(), want.detach(), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(g, g_old, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out.ref_logprobs, old_token_logprobs(ref[:, :-1], labels[:, 1:]),
                               rtol=1e-13, atol=1e-14)
