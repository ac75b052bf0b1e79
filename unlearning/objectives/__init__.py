"""Unlearning objectives: one pure file per method, registered by name.

Every module in this package is imported here, so a new method file only needs `@register`.
"""
import importlib
import pkgutil

from .base import REGISTRY, Loss, Objective, Outputs, OwnsUpdate, SplitOutputs, build, register

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["REGISTRY", "Loss", "Objective", "Outputs", "OwnsUpdate", "SplitOutputs", "build",
           "register"]
