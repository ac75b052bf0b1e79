"""Fixtures for analysis tests: fake run directories (no model), Agg backend, no stray files."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from analysis import testing  # noqa: E402
from analysis.reduce import combine_runs  # noqa: E402


@pytest.fixture(scope="session")
def sweep_dirs(tmp_path_factory):
    """SGA runs at r in {-0.5, 0, 0.4, 0.8}; model utility peaks at 0.4; r* near 0.4."""
    return testing.write_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="session")
def method_dirs(tmp_path_factory):
    """GA, NPO and SGA (r = 0.5) runs."""
    return testing.write_methods(tmp_path_factory.mktemp("methods"))


@pytest.fixture(scope="session")
def sweep_record(sweep_dirs):
    return combine_runs(sweep_dirs)


@pytest.fixture(scope="session")
def methods_record(method_dirs):
    return combine_runs(method_dirs)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")
