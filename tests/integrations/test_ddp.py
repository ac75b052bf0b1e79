"""Under DDP (2 CPU processes, gloo) the Trainer mixin writes the record `geffect unlearn` writes
for the same rows in one process: each rank gets half of the engine's batch.

Tolerance: float64 reductions change with the process layout (the workers run 1 thread each,
the batch is split over ranks and gradients are averaged by all-reduce). Measured: the engine
alone at 1 vs 2 threads differs by 1.2e-12 relative in ||grad L||^2 at step 0, and SGD at
lr 0.3 amplifies such differences to ~1e-9 of a variable's scale by step 2. So every variable
must agree to 1e-8 of its largest magnitude, which a wrong world-size factor, sample order or
divergence batch (differences of order one) cannot meet.

Under loss_reduction "token" the helper's compute_loss pools the forget answer tokens over all
ranks (`helpers.ObjectiveTrainer._rank_scale`), as one process pools its whole batch; the
point-wise rows' weights (`sample_weight`) are gathered with the sample ids.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geffect.io import open_record
from unlearning import engine

from .test_trainer import tiny_cfg

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("reduction", ["token", "sequence"])
def test_ddp_trainer_writes_the_single_process_engine_record(tmp_path, reduction):
    cfg = tiny_cfg(tmp_path, method="sga", hparams={"k": 2}, grad_accum=2, steps=2,
                   loss_reduction=reduction)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "ddp_run.py"), str(tmp_path / "cfg.json"), str(tmp_path / "hf")],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    want = open_record(engine.run(cfg, progress=False) / "geffect.nc")
    got = open_record(tmp_path / "hf" / "geffect.nc")
    assert got.sample_id.values.tolist() == want.sample_id.values.tolist()
    assert set(got.data_vars) == set(want.data_vars)
    assert got.attrs["pointwise"] == want.attrs["pointwise"] == "instance_objective"
    for name in want.data_vars:
        if want[name].dtype.kind == "f":
            a, b = want[name].values, got[name].transpose(*want[name].dims).values
            scale = np.nanmax(np.abs(a))
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-8 * scale, err_msg=name)
