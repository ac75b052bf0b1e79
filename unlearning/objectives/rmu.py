"""Representation Misdirection for Unlearning (RMU), Li et al. 2024 (WMDP), Sec. 5.

"The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning"
(arXiv:2403.03218), Eqs. (1)-(2). With h(x) the output of decoder block `layer` at the
tokens of x, h_ref the frozen reference model's, and u a fixed random unit vector:

    L = mean_i MSE_i(h_theta(forget_i), c * u) + alpha * mean_i MSE_i(h_theta(retain_i), h_ref(retain_i)),

MSE_i the squared error averaged over the hidden dimension and over the answer tokens of
row i (open-unlearning's `compute_activation_loss`; the WMDP code averages over every
position of unlabelled text, padding included: for QA data we steer only the answer tokens,
which the engine's `labels` mark). As in the WMDP code, u is uniform on [0, 1)^d, normalised
(not Gaussian); it is drawn lazily from `vector_seed` and d, never stored on the model.

Defaults follow the WMDP code for Zephyr-7B (32 blocks): steered block 7 (0-based; HF
`hidden_states[8]`), trainable `mlp.down_proj.weight` of blocks 5, 6, 7 (`param_ids=[6]`;
found from the model's structure, `mlp_out_params`, so any HF family works: GPT-2's
`mlp.c_proj`, GPT-NeoX's `mlp.dense_4h_to_h`, Phi's `mlp.fc2`, OPT's `fc2`, MoE experts),
c = 6.5 and alpha = 1200 (the README's command). Other models: block round(7/32 * n_blocks)
(`depth`), set by `bind(model)`; or pass `layer`. c scales with the norm of that block's
activations and must be re-tuned per model: open-unlearning's `configs/trainer/RMU.yaml`
ships steering_coeff c = 2, alpha = 1 (block 7, all parameters trainable), the WMDP README
command c = 6.5, alpha = 1200 (the defaults here). The activation MSE follows the run's
`loss_reduction`: pooled over the batch's answer tokens (`token`) or per row then over rows
(`sequence`, open-unlearning's `compute_activation_loss`).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Loss, Outputs, reduce_tokens, register, row_weights

WMDP_DEPTH = 7 / 32


@lru_cache(maxsize=8)
def _unit_vector_cpu(seed: int, d: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(d, generator=g, dtype=torch.float64)                  # (d,)
    return u / u.norm()                                                  # (d,)


def control_vector(seed: int, d: int, like: Tensor) -> Tensor:
    """(d,) the fixed random unit vector u (uniform, normalised), on `like`'s device/dtype."""
    return _unit_vector_cpu(seed, d).to(device=like.device, dtype=like.dtype)


def token_positions(mask: Tensor, seq_len: int) -> Tensor:
    """(B, S) input positions of the answer tokens, from the engine's shifted label mask.

    The engine's labels are `labels[:, 1:]`, so label column t is input token t + 1.
    """
    if mask.shape[1] not in (seq_len - 1, seq_len):
        raise ValueError(f"labels have {mask.shape[1]} columns; expected the hidden states' "
                         f"length {seq_len} minus 1 (shifted labels)")
    return F.pad(mask, (1, 0))[:, :seq_len]                              # (B, S)


def activation_mse(h: Tensor, target: Tensor, pos: Tensor, reduction: str = "sequence") -> Tensor:
    """Scalar: the squared error (mean over d) averaged over answer tokens: per row then over
    rows (`sequence`, open-unlearning's `compute_activation_loss`) or pooled over the batch's
    answer tokens (`token`, as the WMDP code's `mse_loss` over unpadded text)."""
    per_token = ((h - target) ** 2).mean(-1)                             # (B, S)
    n = pos.sum(-1)                                                      # (B,)
    if bool((n == 0).any()):
        raise ValueError("a row has no answer tokens to steer (all labels masked)")
    return reduce_tokens(per_token, pos, reduction)


_MLP = re.compile(r"mlp|ffn|feed_?forward|moe|expert|^fc\d|^fc_|^dense_h|^dense_4h", re.IGNORECASE)


def decoder_blocks(model) -> tuple[str, nn.ModuleList] | None:
    """(path, blocks): the `nn.ModuleList` of `config.num_hidden_layers` modules holding the
    most parameters (the decoder blocks of any HF causal LM); None if there is none."""
    if not isinstance(model, nn.Module):
        return None
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = [(sum(p.numel() for p in m.parameters()), name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) == n]
    return max(found, key=lambda x: x[0])[1:] if found else None


def _out_dim(module: nn.Module, p: Tensor) -> tuple[int, int]:
    """(out, in) of a weight: Linear (out, in), GPT-2's Conv1D (in, out), experts (E, out, in)."""
    if type(module).__name__ == "Conv1D":
        return p.shape[-1], p.shape[-2]
    return p.shape[-2], p.shape[-1]


def mlp_out_params(model, blocks: Sequence[int]) -> list[str]:
    """Names of the MLP output projections (weights mapping the MLP's width back to the
    hidden size d) of the given decoder blocks, from the model's structure."""
    path, layers = decoder_blocks(model)
    d = model.config.hidden_size
    names = []
    for i in blocks:
        block = f"{path}.{i}"
        for child, sub in layers[i].named_children():
            if not _MLP.search(child):
                continue
            for mname, m in sub.named_modules():
                for k, p in m.named_parameters(recurse=False):
                    out, inp = _out_dim(m, p) if p.ndim >= 2 else (0, 0)
                    if out == d and inp != d:
                        names.append(".".join(x for x in (block, child, mname, k) if x))
    return names


@register("rmu")
@dataclass(frozen=True)
class RMU:
    c: float = 6.5
    alpha: float = 1200.0
    layer: int | None = None
    depth: float = WMDP_DEPTH
    trainable_regex: str | None = None
    vector_seed: int = 0

    splits: ClassVar[tuple[str, ...]] = ("forget", "retain")
    needs_ref: ClassVar[bool] = True

    def bind(self, model) -> "RMU":
        """This objective with `layer` resolved for `model` (depth fraction of its blocks) and,
        unless `trainable_regex` is given, the MLP output projections of blocks layer-2..layer
        found from the model's structure (`mlp_out_params`)."""
        blocks = decoder_blocks(model)
        n = len(blocks[1]) if blocks is not None else model.config.num_hidden_layers
        layer = self.layer if self.layer is not None else min(n - 1, round(self.depth * n))
        if not 0 <= layer < n:
            raise ValueError(f"RMU layer must be a block index in [0, {n}); got {layer}")
        bound = dataclasses.replace(self, layer=layer)
        if self.trainable_regex is None and blocks is not None:
            found = mlp_out_params(model, range(max(0, layer - 2), layer + 1))
            if not found:
                raise ValueError(f"RMU: no MLP output projection (a weight mapping the MLP width "
                                 f"back to hidden size {model.config.hidden_size}) in blocks "
                                 f"{max(0, layer - 2)}..{layer} of {type(model).__name__}; pass "
                                 f"trainable_regex")
            regex = "^(?:" + "|".join(re.escape(x) for x in found) + ")$"
            bound = dataclasses.replace(bound, trainable_regex=regex)
        names = [name for name, _ in model.named_parameters()]
        if not any(re.search(bound.trainable, name) for name in names):
            raise ValueError(f"RMU trainable regex {bound.trainable!r} matches no parameter; "
                             f"names look like {names[:3]}")
        return bound

    def _layer(self) -> int:
        if self.layer is None:
            raise ValueError("RMU's layer is not set: pass layer=N (a 0-based decoder block) or "
                             "bind the objective to the model first (RMU.bind(model))")
        return self.layer

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        return (self._layer() + 1,)             # hidden_states[0] is the embeddings

    @property
    def trainable(self) -> str:
        """Regex of the parameters RMU updates: the MLP down-projection of blocks l-2..l (set
        by `bind` from the model's structure; this name pattern only for unbound use)."""
        if self.trainable_regex is not None:
            return self.trainable_regex
        l = self._layer()
        blocks = "|".join(str(i) for i in range(max(0, l - 2), l + 1))
        return rf"(?:^|\.)(?:layers|h)\.(?:{blocks})\.mlp\.(?:down_proj|c_proj)\.weight$"

    def __call__(self, out: Outputs) -> Loss:
        key = self.hidden_layers[0]
        f, r = out["forget"], out["retain"]
        h_f = f.hidden[key]                                              # (B, S, d)
        h_r, h_r_ref = r.hidden[key], r.ref_hidden[key]                  # (B, S, d)
        target = self.c * control_vector(self.vector_seed, h_f.shape[-1], h_f)  # (d,)
        pos_f, pos_r = token_positions(f.mask, h_f.shape[1]), token_positions(r.mask, h_r.shape[1])
        forget = activation_mse(h_f, target, pos_f, f.reduction)
        retain = activation_mse(h_r, h_r_ref.detach(), pos_r, r.reduction)
        return Loss(total=forget + self.alpha * retain,
                    terms={"forget_mse": forget.detach(), "retain_mse": retain.detach()},
                    weights={"forget": row_weights(pos_f, f.reduction, h_f.dtype),
                             "retain": self.alpha * row_weights(pos_r, r.reduction, h_r.dtype)})
