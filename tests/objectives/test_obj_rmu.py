"""RMU (Li et al. 2024): target vector, masking, hand values, binding to a model."""
from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import pytest
import torch

from ._objtools import grads
from unlearning.objectives import SplitOutputs, build
from unlearning.objectives.rmu import control_vector, token_positions

D = 4
LIKE = torch.zeros(1, dtype=torch.float64)


def split(hidden: torch.Tensor, labels, ref_hidden=None, layer_key=1,
          reduction="sequence") -> SplitOutputs:
    """Outputs with hidden states (B, S, d) and shifted labels (B, S-1)."""
    labels = torch.tensor(labels)
    b, t = labels.shape
    return SplitOutputs(logits=torch.zeros(b, t, 3, dtype=torch.float64), labels=labels,
                        hidden={layer_key: hidden}, reduction=reduction,
                        ref_hidden={} if ref_hidden is None else {layer_key: ref_hidden})


def test_control_vector_is_a_fixed_uniform_unit_vector():
    u = control_vector(0, D, LIKE)
    assert u.shape == (D,) and u.dtype == torch.float64
    assert float(u.norm()) == pytest.approx(1.0, abs=1e-15)
    assert bool((u >= 0).all())                               # uniform [0, 1)^d, as WMDP
    assert torch.equal(u, control_vector(0, D, LIKE))
    assert not torch.equal(u, control_vector(1, D, LIKE))
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(D, generator=g, dtype=torch.float64)
    torch.testing.assert_close(u, raw / raw.norm(), rtol=0, atol=0)


def test_token_positions_follow_the_shifted_labels():
    mask = torch.tensor([[False, True, True, False]])         # label columns 1, 2
    pos = token_positions(mask, 5)                            # input tokens 2, 3
    assert pos.tolist() == [[False, False, True, True, False]]
    with pytest.raises(ValueError, match="minus 1"):
        token_positions(mask, 7)


def targets(rmu, h_shape) -> torch.Tensor:
    return rmu.c * control_vector(rmu.vector_seed, h_shape[-1], LIKE)


def test_loss_is_zero_when_hidden_states_equal_the_targets():
    rmu = build("rmu", layer=0, c=3.0, alpha=10.0)
    labels = [[-100, 5, 6, -100], [7, -100, -100, -100]]      # shifted labels (B, S-1)
    target = targets(rmu, (D,))
    h_f = target.expand(2, 5, D).clone()                      # (B, S, d)
    h_r = torch.randn(2, 5, D, dtype=torch.float64)
    out = {"forget": split(h_f, labels), "retain": split(h_r, labels, h_r.clone())}
    loss = rmu(out)
    assert loss.total.item() == 0.0
    assert loss.terms["forget_mse"].item() == 0.0 and loss.terms["retain_mse"].item() == 0.0


def test_hand_computed_value_and_masking():
    rmu = build("rmu", layer=0, c=2.0, alpha=0.5)
    target = targets(rmu, (D,))
    labels = [[-100, 5, 6, -100], [7, -100, -100, -100]]      # row 0: tokens 2, 3; row 1: token 1
    h_f = target.expand(2, 5, D).clone()
    h_f[0, 2] += torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)      # sq err mean 1/4
    h_f[0, 3] += torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # 1
    h_f[1, 1] += torch.tensor([2.0, 0, 0, 0], dtype=torch.float64)      # 4/4 = 1
    h_f[:, 0] += 100.0                                        # prompt / padding: ignored
    h_f[0, 4] += 100.0
    ref = torch.zeros(2, 5, D, dtype=torch.float64)
    h_r = ref.clone()
    h_r[1, 1, 0] = 4.0                                        # 16/4 = 4 on row 1's only token
    h_r[0, 0] = 50.0                                          # not an answer token
    out = {"forget": split(h_f, labels), "retain": split(h_r, labels, ref)}
    loss = rmu(out)
    forget = ((0.25 + 1.0) / 2 + 1.0) / 2                     # per-row token mean, then rows
    retain = (0.0 + 4.0) / 2
    assert loss.terms["forget_mse"].item() == pytest.approx(forget, abs=1e-12)
    assert loss.terms["retain_mse"].item() == pytest.approx(retain, abs=1e-12)
    assert loss.total.item() == pytest.approx(forget + 0.5 * retain, abs=1e-12)
    # loss_reduction "token": pooled over the batch's answer tokens (3 forget, 2 retain)
    out = {"forget": split(h_f, labels, reduction="token"),
           "retain": split(h_r, labels, ref, reduction="token")}
    loss = rmu(out)
    assert loss.terms["forget_mse"].item() == pytest.approx((0.25 + 1.0 + 1.0) / 3, abs=1e-12)
    assert loss.terms["retain_mse"].item() == pytest.approx((0.0 + 0.0 + 4.0) / 3, abs=1e-12)


def fake_model(n_layers: int, names):
    cfg = SimpleNamespace(num_hidden_layers=n_layers)
    params = [(n, None) for n in names]
    return SimpleNamespace(config=cfg, named_parameters=lambda: iter(params))


def test_bind_uses_the_wmdp_depth_and_blocks():
    names = [f"model.layers.{i}.{m}.weight" for i in range(32)
             for m in ("self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")]
    rmu = build("rmu").bind(fake_model(32, names))
    assert rmu.layer == 7 and rmu.hidden_layers == (8,)       # WMDP: block 7 of 32
    chosen = [n for n in names if re.search(rmu.trainable, n)]
    assert chosen == [f"model.layers.{i}.mlp.down_proj.weight" for i in (5, 6, 7)]
    assert build("rmu").bind(fake_model(30, names)).layer == 7           # round(6.56)
    assert build("rmu", layer=3).bind(fake_model(32, names)).layer == 3  # user's choice kept
    with pytest.raises(ValueError, match="block index"):
        build("rmu", layer=40).bind(fake_model(32, names))
    with pytest.raises(ValueError, match="matches no parameter"):
        build("rmu", trainable_regex="nothing").bind(fake_model(32, names))


def test_unbound_layer_raises_a_clear_error():
    with pytest.raises(ValueError, match="layer is not set"):
        build("rmu").hidden_layers


@pytest.mark.parametrize("name, expected", [
    ("tiny-llama", ["model.layers.0.mlp.down_proj.weight"]),
    ("tiny-gpt2", ["transformer.h.0.mlp.c_proj.weight"]),
])
def test_rmu_on_a_tiny_model(tiny, outputs, name, expected):
    model = tiny(name)
    rmu = build("rmu", c=5.0, alpha=2.0).bind(model)
    assert rmu.layer == 0 and rmu.hidden_layers == (1,)
    assert [n for n, _ in model.named_parameters() if re.search(rmu.trainable, n)] == expected
    ref = copy.deepcopy(model)
    out = outputs(rmu, model, ref)
    loss = rmu(out)
    assert loss.terms["retain_mse"].item() == 0.0             # model == reference
    # slow oracle for the forget term: loop over rows and answer tokens
    h = out["forget"].hidden[1].detach()
    u = 5.0 * control_vector(0, h.shape[-1], h)
    labels = out["forget"].labels
    rows = []
    for i in range(h.shape[0]):
        errs = [float(((h[i, t + 1] - u) ** 2).mean()) for t in range(labels.shape[1])
                if labels[i, t] != -100]
        rows.append(sum(errs) / len(errs))
    assert loss.terms["forget_mse"].item() == pytest.approx(sum(rows) / len(rows), rel=1e-12)
    params = [p for n, p in model.named_parameters() if re.search(rmu.trainable, n)]
    g = grads(loss.total, params)
    assert all(float(x.abs().sum()) > 0 for x in g)


def test_bind_finds_the_mlp_output_projections_of_every_family():
    """Structure, not names: the weight mapping the MLP width back to d, in blocks l-2..l."""
    from tests.geffect.families import FAMILIES, family_model

    want = {"gpt_neox": "gpt_neox.layers.{}.mlp.dense_4h_to_h.weight",
            "phi": "model.layers.{}.mlp.fc2.weight", "opt": "model.decoder.layers.{}.fc2.weight",
            "gpt2": "transformer.h.{}.mlp.c_proj.weight", "gptj": "transformer.h.{}.mlp.fc_out.weight",
            "mixtral": "model.layers.{}.mlp.experts.down_proj",
            "gemma": "model.layers.{}.mlp.down_proj.weight"}
    for name in FAMILIES:
        model = family_model(name, dtype=torch.float32, attn="eager")
        rmu = build("rmu", layer=1).bind(model)
        chosen = [n for n, _ in model.named_parameters() if re.search(rmu.trainable, n)]
        assert len(chosen) >= 2, name                                # blocks 0 and 1
        if name in want:
            assert chosen == [want[name].format(i) for i in (0, 1)], name
    model = family_model("llama", dtype=torch.float32)
    assert build("rmu", layer=0, trainable_regex="q_proj").bind(model).trainable == "q_proj"
