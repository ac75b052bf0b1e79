"""Reductions, figures and the smoothing-rate theory check over geffect records.

Reads xarray records only and never imports torch (tests/analysis/test_imports.py checks).
"""
from .records import Run, describe, load_run, open_runs
from .reduce import combine_runs

__all__ = ["Run", "combine_runs", "describe", "load_run", "open_runs"]
