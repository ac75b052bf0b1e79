"""Reductions, figures and the smoothing-rate theory check over geffect records.

Reads xarray records only and never imports torch (tests/analysis/test_imports.py checks).
"""
from .records import Run, load_run
from .reduce import combine_runs

__all__ = ["Run", "load_run", "combine_runs"]
