"""Parameter groups: every parameter in exactly one group, named by its module path.

A group is a module path such as `model.layers.3.mlp` with coordinates `layer` (-1 outside the
blocks), `component` (embed / attn / mlp / norm / lm_head, or other) and `n_params`, plus the
coarse band of Wang et al. 2025 (Fig. 2: embedding, shallow / middle / deep thirds of the
blocks, LM head). Tied weights (an LM head sharing the embedding matrix) are counted once, in
the group of the first module that owns them (`named_parameters` order: the embedding).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from .schema import band_of

# One table per architecture family: (regex on the parameter name, group template, component).
# The regex's groups fill the template. Order matters: the first match wins.
LLAMA = (
    (r"^(model\.embed_tokens)\.", "{0}", "embed"),
    (r"^(model\.layers\.(\d+)\.self_attn)\.", "{0}", "attn"),
    (r"^(model\.layers\.(\d+)\.mlp)\.", "{0}", "mlp"),
    (r"^(model\.layers\.(\d+)\.\w*norm)\.", "{0}", "norm"),
    (r"^(model\.norm)\.", "{0}", "norm"),
    (r"^(lm_head)\.", "{0}", "lm_head"),
)
GPT2 = (
    (r"^(transformer\.wte)\.", "{0}", "embed"),
    (r"^(transformer\.wpe)\.", "{0}", "embed"),
    (r"^(transformer\.h\.(\d+)\.attn)\.", "{0}", "attn"),
    (r"^(transformer\.h\.(\d+)\.mlp)\.", "{0}", "mlp"),
    (r"^(transformer\.h\.(\d+)\.ln_\d)\.", "{0}", "norm"),
    (r"^(transformer\.ln_f)\.", "{0}", "norm"),
    (r"^(lm_head)\.", "{0}", "lm_head"),
)
FAMILIES = {"llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "qwen3": LLAMA,
            "smollm3": LLAMA, "gpt2": GPT2}
_BLOCK = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


@dataclass
class GroupTable:
    """Parameter -> group assignment of one model.

    Attributes:
        names: group names (module paths), in first-parameter order.
        layer, component, n_params, band: one entry per group.
        param_names: parameter names (tied weights once), in `named_parameters` order.
        param_group: group index of each parameter, aligned with `param_names`.
        family: the table used ("llama", "gpt2", or "generic").
    """

    names: list[str]
    layer: list[int]
    component: list[str]
    n_params: list[int]
    band: list[str]
    param_names: list[str]
    param_group: list[int]
    family: str
    _index: dict[int, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def group_of(self, param: nn.Parameter) -> int:
        """Group index of a parameter object (tied weights resolve to their one group)."""
        try:
            return self._index[id(param)]
        except KeyError:
            raise KeyError(f"parameter of shape {tuple(param.shape)} is not in this GroupTable; "
                           f"expected one of the model's {len(self.param_names)} parameters")

    def coords(self) -> dict[str, tuple[str, np.ndarray]]:
        """Coordinates of the `group` dim, ready for `xr.Dataset(coords=...)`."""
        return {"group": ("group", np.array(self.names, dtype=object)),
                "layer": ("group", np.array(self.layer, dtype=np.int64)),
                "component": ("group", np.array(self.component, dtype=object)),
                "n_params": ("group", np.array(self.n_params, dtype=np.int64)),
                "band": ("group", np.array(self.band, dtype=object))}


def _match(name: str, table) -> tuple[str, int, str] | None:
    for pattern, template, component in table:
        m = re.match(pattern, name)
        if m:
            layer = int(m.group(2)) if m.re.groups >= 2 and m.group(2) is not None else -1
            return template.format(m.group(1)), layer, component
    return None


def _generic(name: str) -> tuple[str, int, str]:
    """Unknown architecture: the owning module's path, component "other"."""
    path = name.rsplit(".", 1)[0] if "." in name else name
    m = _BLOCK.search(name + ".")
    return path, int(m.group(1)) if m else -1, "other"


def param_groups(model: nn.Module) -> GroupTable:
    """Assign every parameter of `model` to exactly one group.

    Llama-style (`model.layers.N.{self_attn,mlp,*norm}`) and GPT-2 (`transformer.h.N.{attn,mlp,
    ln_1,ln_2}`) models use their family table; other architectures fall back to grouping by
    the owning module's path with component "other".
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    table = FAMILIES.get(model_type)
    family = model_type if table is not None else "generic"
    names: list[str] = []
    info: dict[str, list] = {}
    param_names, param_group, index = [], [], {}
    for pname, p in model.named_parameters():                      # tied weights appear once
        hit = _match(pname, table) if table is not None else None
        if hit is None:
            hit = _generic(pname)
            if table is not None:
                hit = (hit[0], hit[1], "other")
        gname, layer, component = hit
        if gname not in info:
            names.append(gname)
            info[gname] = [layer, component, 0]
        info[gname][2] += p.numel()
        index[id(p)] = names.index(gname)
        param_names.append(pname)
        param_group.append(names.index(gname))
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if n_layers is None:
        n_layers = max([info[g][0] for g in names] + [-1]) + 1
    return GroupTable(
        names=names, layer=[info[g][0] for g in names], component=[info[g][1] for g in names],
        n_params=[info[g][2] for g in names],
        band=[band_of(info[g][0], n_layers, info[g][1]) for g in names],
        param_names=param_names, param_group=param_group, family=family, _index=index)
