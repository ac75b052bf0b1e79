"""Parameter groups (every parameter in one group, tied once) and the per-row kernels against
explicitly formed per-row gradients."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from geffect import kernels, param_groups
from unlearning.models import tiny_model

from .conftest import MODELS


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_use_in_exactly_one_group(name):
    """Every use of every parameter has one group; a tied matrix has one group per use (the
    embedding and the LM head; before issue 13 the head's use was folded into the embedding's
    group), and counts its parameters in each."""
    model = tiny_model(name)
    t = param_groups(model)
    unique = {id(p): p for p in model.parameters()}
    tied = name in ("tiny-llama-tied", "tiny-gpt2")
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert sum(t.n_params) == sum(p.numel() for p in unique.values()) + tied * head.numel()
    assert len(t.param_names) == len(unique)
    assert len(t.uses) == len(list(model.named_parameters(remove_duplicate=False)))
    assert len(set(t.names)) == len(t.names)
    for p in model.parameters():
        assert 0 <= t.group_of(p) < len(t)
    assert "other" not in t.component
    assert t.use_group("lm_head", "weight") == t.names.index("lm_head")
    assert t.component[t.names.index("lm_head")] == "lm_head"
    if tied:                                                         # home: the embedding
        assert t.group_of(head) == t.group_of(emb) == 0
        assert t.tied == {id(emb): [0, t.names.index("lm_head")]}
    else:
        assert t.tied == {}


def test_llama_and_gpt2_tables():
    t = param_groups(tiny_model("tiny-llama", n_layers=3))
    rows = dict(zip(t.names, zip(t.layer, t.component, t.band)))
    assert rows["model.embed_tokens"] == (-1, "embed", "embed")
    assert rows["model.layers.0.self_attn"] == (0, "attn", "shallow")
    assert rows["model.layers.1.mlp"] == (1, "mlp", "middle")
    assert rows["model.layers.2.post_attention_layernorm"] == (2, "norm", "deep")
    assert rows["model.norm"] == (-1, "norm", "lm") and rows["lm_head"] == (-1, "lm_head", "lm")
    assert t.n_params[t.names.index("model.layers.1.mlp")] == 3 * 16 * 32
    g = param_groups(tiny_model("tiny-gpt2"))
    rows = dict(zip(g.names, zip(g.layer, g.component)))
    assert rows["transformer.wpe"] == (-1, "embed") and rows["transformer.h.1.ln_2"] == (1, "norm")
    assert rows["transformer.h.0.attn"] == (0, "attn") and rows["transformer.ln_f"] == (-1, "norm")
    assert len(g) == 2 + 2 * 4 + 1 + 1                               # tied head: its own use group
    assert g.band[g.names.index("lm_head")] == "lm" and g.band[0] == "embed"


def test_unknown_architecture_falls_back_to_module_paths():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()),
                          nn.Linear(4, 3))
    t = param_groups(model)
    assert t.names == ["0", "1.0", "2"] and t.component == ["embed", "other", "other"]
    assert t.family == "generic" and t.n_params == [40, 20, 15]


def _per_row_grads(module, x, b):
    """Explicit per-row gradients: one autograd.grad per row (the obvious oracle)."""
    out = []
    for n in range(x.shape[0]):
        y = module(x[n:n + 1])
        out.append(dict(zip([k for k, _ in module.named_parameters()],
                            torch.autograd.grad((y * b[n:n + 1]).sum(), list(module.parameters())))))
    return out


def _check(module, x, kind):
    torch.manual_seed(0)
    y = module(x)
    b = torch.randn_like(y)                                          # (N, T, out)
    g = {k: torch.randn(2, *p.shape, dtype=p.dtype) for k, p in module.named_parameters()}
    if kind == "norm":
        dense = kernels.norm_per_row(module, x, b)
        got = {k: kernels.dense_rows(dense[k], g[k]) for k in g}
    else:
        got = kernels.rows_inner(kind, module, x, b, g)
    for n, grads in enumerate(_per_row_grads(module, x, b)):
        for k, gr in grads.items():
            want = torch.stack([(gr * g[k][d]).sum() for d in range(2)])
            torch.testing.assert_close(got[k][n], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)])                  # both contraction orders
def test_linear_and_conv1d_kernels(shape):
    x = torch.randn(3, 5, shape[0], dtype=torch.float64)
    lin = nn.Linear(*shape).double()
    assert kernels.kind_of(lin) == "linear"
    _check(lin, x, "linear")
    conv = Conv1D(shape[1], shape[0]).double()
    nn.init.normal_(conv.weight), nn.init.normal_(conv.bias)
    assert kernels.kind_of(conv) == "conv1d"
    _check(conv, x, "conv1d")


def test_embedding_kernel_skips_padding_idx():
    emb = nn.Embedding(7, 3, padding_idx=2).double()
    ids = torch.tensor([[1, 2, 2, 5], [2, 0, 1, 1]])
    assert kernels.kind_of(emb) == "embedding"
    _check(emb, ids, "embedding")


@pytest.mark.parametrize("make", [lambda: nn.LayerNorm(5), lambda: nn.RMSNorm(5),
                                  lambda: nn.LayerNorm(5, bias=False)])
def test_norm_kernels(make):
    norm = make().double()
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    assert kernels.kind_of(norm) == "norm"
    _check(norm, torch.randn(3, 4, 5, dtype=torch.float64), "norm")


def test_unknown_module_has_no_kernel():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.s

    assert kernels.kind_of(Scale()) is None
    assert kernels.kind_of(nn.Embedding(4, 2, max_norm=1.0)) is None
