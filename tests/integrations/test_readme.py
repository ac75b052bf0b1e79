"""The README's Trainer example runs as written (in a fresh directory and interpreter)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import xarray as xr

from geffect.io import open_record
from unlearning.integrations.report import scalars

from .test_report import events

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## In a Hugging Face Trainer", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_trainer_example_runs_as_written(tmp_path):
    (tmp_path / "example.py").write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TENSORBOARD_LOGGING_DIR", None)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "ga-trainer"
    ds = open_record(run / "geffect.nc")
    assert ds.step.values.tolist() == [0, 2, 4]
    assert all(i.startswith("tofu/") for i in ds.sample_id.values.ravel() if i)
    assert ds.attrs["pointwise"] == "instance_objective"                # the example's weights
    xr.testing.assert_allclose((ds.geffect_pointwise * ds.sample_weight).sum("sample"), ds.geffect,
                               rtol=1e-6)
    assert (ds.geffect.sel(probe="forget").sum("group") < 0).all()    # GA raises forget risk
    (logdir,) = (run / "runs").iterdir()                                # the Trainer's default
    ev = events(logdir)
    for step in (0, 2, 4):
        for tag, value in scalars(ds.sel(step=[step])).items():
            assert abs(ev[f"train/{tag}"][step] - value) <= 1e-6 * abs(value) + 1e-9, tag
    assert "train/loss" in ev
