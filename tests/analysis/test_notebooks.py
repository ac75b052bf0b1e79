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


def test_training_stability_reads_runs_from_the_environment(env, method_dirs):
    env.setenv("GEFFECT_RUN_DIRS", os.pathsep.join(str(d) for d in method_dirs))
    nb = _execute("training_stability")
    assert _images(nb) >= 4                                         # stability, spread, batch NLL, terms
    assert str(method_dirs[0]) in _outputs(nb)


def _outputs(nb) -> str:
    return "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("data", {}).get("text/markdown", ""))
                   + o.get("text", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_runner_stores_an_executed_copy_on_given_runs(env, method_dirs, tmp_path):
    from analysis import notebooks

    source = (NOTEBOOKS / "paper_figures.ipynb").read_text()
    path = notebooks.execute("paper_figures", method_dirs, tmp_path / "docs")
    assert path == tmp_path / "docs" / "paper_figures.ipynb"
    nb = nbformat.read(path, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and str(method_dirs[0]) in injected[0].source
    # 2 comparison figures, 4 per run (+ divergence for SGA), 1 cumulative plot
    assert _images(nb) >= 2 + 4 * len(method_dirs) + 1 + 1
    assert "Training stability of ga, npo and sga gls r=+0.5" in _outputs(nb)    # captions shown
    assert (NOTEBOOKS / "paper_figures.ipynb").read_text() == source             # source untouched
    with pytest.raises(FileNotFoundError, match="not found"):
        notebooks.execute("paper_figures", [tmp_path / "nope"], tmp_path / "docs")


def test_optimal_smoothing_rate_prints_verdict(env):
    nb = _execute("optimal_smoothing_rate")
    text = _text(nb)
    assert "trade-off [max model_utility subject to nll_forget >=" in text
    assert "best r = +0.500" in text and "First-order check" in text
    assert _images(nb) >= 2
