"""Every baseline: registered, declares what it reads, runs forward and backward on tiny models."""
from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import re

import pytest
import torch

from unlearning.config import RunConfig
from unlearning.objectives import REGISTRY, OwnsUpdate, build

NEEDS_REF = {"npo": True, "simnpo": False, "wga": False, "tnpo": True, "wtnpo": True,
             "idkpo": False, "idkdpo": True, "rmu": True, "ngdiff": False}
SPLITS = {"npo": ("forget",), "simnpo": ("forget", "retain"), "wga": ("forget",),
          "tnpo": ("forget",), "wtnpo": ("forget",), "idkpo": ("idk",),
          "idkdpo": ("forget", "idk"), "rmu": ("forget", "retain"), "ngdiff": ("forget", "retain")}


@pytest.mark.parametrize("name", sorted(NEEDS_REF))
def test_declares_splits_and_reference_need(name):
    obj = build(name)
    assert name in REGISTRY and obj.name == name
    assert obj.needs_ref is NEEDS_REF[name]
    assert tuple(obj.splits) == SPLITS[name]


@pytest.mark.parametrize("name", ["npo", "simnpo", "wga", "tnpo", "wtnpo", "idkpo", "idkdpo"])
def test_a_kl_regulariser_always_asks_for_a_reference(name):
    obj = build(name, retain="kl")
    assert obj.needs_ref and "retain" in obj.splits


@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("name", sorted(NEEDS_REF))
def test_runs_forward_and_backward_on_a_tiny_model(tiny, outputs, name, model_name):
    model = tiny(model_name)
    obj = build(name)
    if hasattr(obj, "bind"):
        obj = obj.bind(model)
    ref = copy.deepcopy(model) if obj.needs_ref else None   # no reference: any use would raise
    trainable = getattr(obj, "trainable", None)
    params = [p for n, p in model.named_parameters() if trainable is None or re.search(trainable, n)]
    loss = obj(outputs(obj, model, ref))
    assert loss.total.ndim == 0 and math.isfinite(loss.total.item())
    assert all(math.isfinite(float(torch.as_tensor(v).detach())) for v in loss.terms.values())
    if isinstance(obj, OwnsUpdate):
        obj.backward(loss, params)
    else:
        loss.total.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in params)
    assert sum(float(p.grad.abs().sum()) for p in params) > 0


def test_hyperparameters_are_valid_cli_flags():
    """One flag per hyperparameter: no clash with a run flag, and a type the CLI can parse."""
    from unlearning.cli import TYPES

    run_flags = {f.name for f in dataclasses.fields(RunConfig)}
    for name in NEEDS_REF:
        for f in dataclasses.fields(REGISTRY[name]):
            assert f.name not in run_flags, f"{name}.{f.name} clashes with a RunConfig flag"
            assert str(f.type) in TYPES, f"{name}.{f.name}: type {f.type} has no CLI parser"


@pytest.mark.parametrize("name", sorted(NEEDS_REF))
def test_docstring_cites_paper_and_equation_and_defaults_are_documented(name):
    doc = importlib.import_module(REGISTRY[name].__module__).__doc__
    assert re.search(r"et al\. 20\d\d", doc) and re.search(r"(Eq|Sec)\. ?\(?\d", doc)
    assert "efault" in doc


def test_unknown_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="unknown \\['gamma'\\]"):
        build("npo", gamma=1.0)
    with pytest.raises(ValueError, match="retain term must be one of"):
        build("wga", retain="KL")
