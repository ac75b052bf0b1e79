"""Parameter groups from the model's structure: every parameter use in exactly one group.

A group is a module path such as `model.layers.3.mlp` with coordinates `layer` (-1 outside the
blocks), `component` (embed / attn / mlp / norm / lm_head, or other) and `n_params`, plus the
coarse band of Wang et al. 2025 (Fig. 2: embedding, shallow / middle / deep thirds of the
blocks, LM head). The structure, not a per-family name table, decides (works for Llama,
Mistral, Mixtral, Qwen, Gemma, Phi, GPT-NeoX, OPT, Falcon, Bloom, GPT-2/J/BigCode, StableLM,
OLMo):

* `get_input_embeddings()` is `embed`, `get_output_embeddings()` is `lm_head`;
* the decoder blocks are the `nn.ModuleList` of `config.num_hidden_layers` modules holding the
  most parameters; each direct child of a block is one group: `norm` (a norm by name or type),
  `attn` (`attn`/`attention` in its name), `mlp` (`mlp`, `ffn`, `moe`, `fc1`, ...: experts and
  router included);
* outside the blocks, other embeddings (positions) are `embed`, norms `norm`; anything else
  keeps its module path with component `other` (unknown layouts still work, labelled honestly).

Tied weights are split by use: a matrix used by two modules (the input embedding and the LM
head of SmolLM2, Gemma, GPT-2) gets one group per use, and each use's G-effect is the part of
the risk gradient that flows through that use (SCHEMA.md, *Tied weights*), so the uses sum to
the parameter's G-effect and the paper's embedding and LM-head bands both exist.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from .schema import band_of

_NORM = re.compile(r"norm|^ln(_|\d|$)|layernorm", re.IGNORECASE)
_ATTN = re.compile(r"attn|attention", re.IGNORECASE)
_MLP = re.compile(r"mlp|ffn|feed_?forward|moe|expert|^fc\d|^fc_|^dense_h|^dense_4h", re.IGNORECASE)


@dataclass
class GroupTable:
    """Parameter-use -> group assignment of one model.

    Attributes:
        names: group names (module paths), in module order.
        layer, component, n_params, band: one entry per group (a tied matrix counts in each of
            its use groups).
        param_names: parameter names (tied weights once), in `named_parameters` order.
        param_group: home group (first use) of each parameter, aligned with `param_names`.
        family: `config.model_type`, or "generic" without a config.
        uses: (module path, own parameter name, group index) for every use of every parameter.
        tied: id(param) -> group indices of its uses, home first (parameters used by modules
            in more than one group only).
    """

    names: list[str]
    layer: list[int]
    component: list[str]
    n_params: list[int]
    band: list[str]
    param_names: list[str]
    param_group: list[int]
    family: str
    uses: list[tuple[str, str, int]] = field(default_factory=list)
    tied: dict[int, list[int]] = field(default_factory=dict, repr=False)
    _index: dict[int, int] = field(default_factory=dict, repr=False)
    _use: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def group_of(self, param: nn.Parameter) -> int:
        """Home group index of a parameter object (a tied matrix: its first use)."""
        try:
            return self._index[id(param)]
        except KeyError:
            raise KeyError(f"parameter of shape {tuple(param.shape)} is not in this GroupTable; "
                           f"expected one of the model's {len(self.param_names)} parameters")

    def use_group(self, module: str, pname: str) -> int:
        """Group index of parameter `pname` as used by the module at path `module`."""
        try:
            return self._use[(module, pname)]
        except KeyError:
            raise KeyError(f"no parameter {pname!r} owned by module {module!r} in this "
                           f"GroupTable; expected a path from `model.named_modules()`")

    def coords(self) -> dict[str, tuple[str, np.ndarray]]:
        """Coordinates of the `group` dim, ready for `xr.Dataset(coords=...)`."""
        return {"group": ("group", np.array(self.names, dtype=object)),
                "layer": ("group", np.array(self.layer, dtype=np.int64)),
                "component": ("group", np.array(self.component, dtype=object)),
                "n_params": ("group", np.array(self.n_params, dtype=np.int64)),
                "band": ("group", np.array(self.band, dtype=object))}


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(path, modules) of the decoder blocks: the `nn.ModuleList` of `num_hidden_layers`
    modules (any length >= 2 without a config) holding the most parameters; None if none."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best, size = None, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and (len(m) == n if n else len(m) >= 2):
            k = sum(p.numel() for p in m.parameters())
            if k > size:
                best, size = (name, m), k
    return best


def _is_norm(name: str, module: nn.Module) -> bool:
    return bool(_NORM.search(name)) or "Norm" in type(module).__name__


def _block_component(name: str, module: nn.Module) -> str:
    if _is_norm(name, module):
        return "norm"
    if _ATTN.search(name):
        return "attn"
    if _MLP.search(name):
        return "mlp"
    return "other"


def _locate(model: nn.Module, path: str, module: nn.Module, blocks, special) -> tuple[str, int, str]:
    """(group, layer, component) of the module at `path` that owns parameters."""
    if id(module) in special:
        return path, -1, special[id(module)]
    if blocks is not None:
        prefix = blocks[0] + "."
        if path.startswith(prefix):
            rest = path[len(prefix):].split(".")
            layer = int(rest[0])
            block = prefix + rest[0]
            if len(rest) == 1:
                return block, layer, "other"
            child = model.get_submodule(block + "." + rest[1])
            return block + "." + rest[1], layer, _block_component(rest[1], child)
    leaf = path.rsplit(".", 1)[-1]
    if isinstance(module, nn.Embedding):
        return path, -1, "embed"
    if _is_norm(leaf, module):
        return path, -1, "norm"
    return path, -1, "other"


def _special(model: nn.Module) -> dict[int, str]:
    out = {}
    for getter, comp in (("get_output_embeddings", "lm_head"), ("get_input_embeddings", "embed")):
        try:
            m = getattr(model, getter)() if hasattr(model, getter) else None
        except (AttributeError, NotImplementedError):
            m = None
        if isinstance(m, nn.Module):
            out[id(m)] = comp
    return out


def param_groups(model: nn.Module) -> GroupTable:
    """Assign every use of every parameter of `model` to exactly one group (see module doc)."""
    cfg = getattr(model, "config", None)
    family = getattr(cfg, "model_type", None) or "generic"
    blocks, special = block_list(model), _special(model)
    names: list[str] = []
    info: dict[str, list] = {}
    uses, use, order, first_block = [], {}, {}, None
    groups_of: dict[int, list[int]] = {}
    for i, (path, module) in enumerate(model.named_modules()):
        if blocks is not None and path == blocks[0]:
            first_block = i
        for pname, p in module.named_parameters(recurse=False):
            gname, layer, component = _locate(model, path, module, blocks, special)
            if gname not in info:
                names.append(gname)
                info[gname] = [layer, component, 0, set()]
                order[gname] = i
            gi = names.index(gname)
            if id(p) not in info[gname][3]:
                info[gname][3].add(id(p))
                info[gname][2] += p.numel()
            uses.append((path, pname, gi))
            use[(path, pname)] = gi
            if gi not in groups_of.setdefault(id(p), []):
                groups_of[id(p)].append(gi)
    param_names, param_group, index = [], [], {}
    for pname, p in model.named_parameters():                      # tied weights appear once
        index[id(p)] = groups_of[id(p)][0]
        param_names.append(pname)
        param_group.append(index[id(p)])
    n_layers = len(blocks[1]) if blocks is not None else 0

    def band(g: str) -> str:
        layer, comp = info[g][0], info[g][1]
        if layer < 0 and comp != "lm_head" and first_block is not None and order[g] < first_block:
            return "embed"                                          # input side of the blocks
        return band_of(layer, n_layers, comp)

    return GroupTable(
        names=names, layer=[info[g][0] for g in names], component=[info[g][1] for g in names],
        n_params=[info[g][2] for g in names], band=[band(g) for g in names],
        param_names=param_names, param_group=param_group, family=family, uses=uses,
        tied={k: v for k, v in groups_of.items() if len(v) > 1}, _index=index, _use=use)
