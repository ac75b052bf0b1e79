"""finetune and sweep on a tiny model: they produce what later stages read."""
import pytest
import xarray as xr

from unlearning.checkpoint import checkpoints, load_state
from unlearning.config import RunConfig
from unlearning.finetune import finetune
from unlearning.models import load_model
from unlearning.sweep import run_name, sweep


def test_finetune_lowers_the_training_nll_and_caches(tmp_path):
    made = finetune("tiny-llama", tmp_path, forget_split="forget01", n_retain=4, epochs=4, lr=3e-3,
                    batch_size=8, max_length=256, progress=False)
    assert set(made) == {"target", "retain"}
    for role, steps in (("target", 4 * 6), ("retain", 4 * 1)):   # ceil(44/8)=6, ceil(4/8)=1
        with xr.open_dataset(tmp_path / f"{role}-run" / "train.nc") as ds:
            train = ds.load()
        assert train.sizes["step"] == steps
        assert float(train.loss[-1]) < float(train.loss[0])
        load_model(str(made[role]))                               # an HF directory
    mtime = (made["target"] / "config.json").stat().st_mtime
    finetune("tiny-llama", tmp_path, forget_split="forget01", n_retain=4, epochs=4, lr=3e-3,
             batch_size=8, max_length=256, progress=False)
    assert (made["target"] / "config.json").stat().st_mtime == mtime   # reused, not retrained


def test_sweep_runs_the_grid_skips_finished_runs_and_combines(tmp_path):
    base = RunConfig(method="sga", hparams={"k": 3}, model="tiny-llama", n_forget=6, n_retain=24,
                     steps=2, batch_size=2, lr=1e-3, max_length=256, geffect_every=1,
                     probe_forget=2, probe_retain=2, optimizer="sgd")
    dirs = sweep(base, [-0.5, 0.0, 0.5], ["gls", "split"], tmp_path, progress=False)
    assert [d.name for d in dirs] == [run_name(c, r) for c, r in
                                      [("gls", -0.5), ("gls", 0.0), ("gls", 0.5), ("split", 0.0), ("split", 0.5)]]
    for d in dirs:
        assert load_state(checkpoints(d / "checkpoints")[-1])["step"] == 2
    with xr.open_dataset(tmp_path / "sweep.nc") as ds:
        combined = ds.load()
    assert combined.sizes["run"] == 5
    assert sorted(combined.smoothing_rate.values.tolist()) == [-0.5, 0.0, 0.0, 0.5, 0.5]
    stamp = (dirs[0] / "train.nc").stat().st_mtime
    sweep(base, [-0.5], ["gls"], tmp_path, progress=False)
    assert (dirs[0] / "train.nc").stat().st_mtime == stamp        # finished: skipped
    # the combined record carries r* and the smoothing-rate figure and verdict come out of it
    assert "r_star" in combined and bool(combined.r_star.notnull().any())
    from analysis.figures import write_figures

    names = {p.name for p in write_figures(dirs, tmp_path / "figs")}
    assert {"smoothing_rate.png", "smoothing_rate.pdf", "theory.txt"} <= names
    assert "r*" in (tmp_path / "figs" / "theory.txt").read_text()
