"""The notebooks are stored without outputs and execute end to end (nbclient) on fake records."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["training_stability", "paper_figures", "optimal_smoothing_rate"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_stripped(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and code[0].metadata.get("tags") == ["parameters"]
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"{name}: outputs not stripped"


def _execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("GEFFECT_RUN_DIRS", raising=False)
    return monkeypatch


def test_training_stability_runs_on_fake_records(env):
    nb = _execute("training_stability")
    assert _images(nb) >= 3


def test_paper_figures_runs_on_given_run_dirs(env, method_dirs):
    env.setenv("GEFFECT_RUN_DIRS", os.pathsep.join(str(d) for d in method_dirs))
    nb = _execute("paper_figures")
    assert _images(nb) >= len(method_dirs) + 1 + 1                 # per run, divergence, cumulative


def test_optimal_smoothing_rate_prints_verdict(env):
    nb = _execute("optimal_smoothing_rate")
    text = _text(nb)
    assert "trade-off [max model_utility subject to nll_forget >=" in text
    assert "best r = +0.500" in text and "First-order check" in text
    assert _images(nb) >= 2
