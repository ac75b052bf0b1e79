"""Fixtures for the objective tests; the plain helpers live in `_objtools.py`."""
from __future__ import annotations

import pytest
import torch

from ._objtools import IDK, QA, RETAIN_QA, forward, make_batch, table_outputs
from unlearning.models import tiny_model, tiny_tokenizer


@pytest.fixture
def table():
    """table(rows, ref_rows=None) -> SplitOutputs whose logprobs are the given numbers."""
    return table_outputs


@pytest.fixture
def tok():
    return tiny_tokenizer()


@pytest.fixture
def batches(tok):
    """Per-split batches: forget, retain, idk (idk row i answers forget question i)."""
    return {"forget": make_batch(tok, QA), "retain": make_batch(tok, RETAIN_QA),
            "idk": make_batch(tok, [(q, a) for (q, _), a in zip(QA, IDK)])}


@pytest.fixture
def tiny():
    """tiny(name='tiny-llama', seed=0) -> a fresh float64 tiny model."""
    return lambda name="tiny-llama", seed=0: tiny_model(name, seed=seed, dtype=torch.float64)


@pytest.fixture
def outputs(batches):
    """outputs(objective, model, ref=None, reduction="sequence") -> the engine's per-split
    outputs for `objective`."""

    def make(objective, model, ref=None, reduction="sequence"):
        layers = tuple(getattr(objective, "hidden_layers", ()))
        use_ref = ref if objective.needs_ref else None
        return {s: forward(model, batches[s], layers, use_ref, reduction) for s in objective.splits}

    return make
