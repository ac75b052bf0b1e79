"""Issue 17's speed-ups change no number: every method's records on a tiny float64 model equal
the ones the engine wrote before them (`golden_records.json`, see `golden_records.py`)."""
import json
import math

import pytest
from golden_records import CASES, PATH, run_case

GOLDEN = json.loads(PATH.read_text())


def assert_same(got, want, where="", rtol=1e-9, atol=1e-12):
    """Equal nested dicts/lists of floats (None = NaN), naming the first place that differs."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}", rtol, atol)
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {len(got)} values, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]", rtol, atol)
    elif want is None:
        assert got is None, f"{where}: {got}, expected NaN"
    else:
        assert got is not None and math.isclose(got, want, rel_tol=rtol, abs_tol=atol), \
            f"{where}: {got}, expected {want}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_record_is_unchanged_when_every_step_is_monitored(name, tmp_path):
    assert_same(run_case(name, tmp_path, monitor_every=1), GOLDEN[name], name)


@pytest.mark.parametrize("name", ["ga", "graddiff"])
def test_only_extra_monitoring_nlls_are_nan_between_monitoring_steps(name, tmp_path):
    """monitor_every=2 over steps 0, 1, 2: step 1 has no retain NLL unless the objective read
    retain data itself (GradDiff); every other number is as before."""
    got = run_case(name, tmp_path, monitor_every=2)
    want = json.loads(json.dumps(GOLDEN[name]))
    if "retain" not in _splits(name):
        want["nll_retain"][1] = None
    assert_same(got, want, name)


def _splits(name: str) -> tuple[str, ...]:
    from unlearning.objectives import build

    return build(CASES[name]["method"], **CASES[name].get("hparams", {})).splits
