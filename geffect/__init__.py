"""The G-effect hooks layer: exact per-layer, per-instance G-effects as xarray records.

Wang et al., "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond"
(ICLR 2025), Definition 1. See `geffect/SCHEMA.md` for the record's definitions.

Names are imported lazily so that `import geffect.schema` / `geffect.testing` (used by the
analysis package, which must not import torch) never pulls in torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Recorder": "measure", "param_groups": "groups", "GroupTable": "groups",
    "validate": "schema", "SchemaError": "schema",
    "write_record": "io", "append_record": "io", "open_record": "io",
    "r_star": "divergence", "fake_record": "testing", "fake_train_record": "testing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'geffect' has no attribute {name!r}")
