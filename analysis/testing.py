"""Fake run directories for analysis tests and notebooks (no model, no torch).

Built on `geffect.testing.fake_record` / `fake_train_record` (schema-valid G-effect and
training records), with three additions so that analysis can be checked against hand values:

* the run config is the engine's (`unlearning.config.RunConfig` JSON: `method`, `lr`,
  `optimizer`, `hparams` with SGA's `r`, `k`, `convention`);
* the recorded probe risks move by exactly -lr * (instance G-effect summed over groups) from
  one step to the next, so the first-order check of `analysis.theory` is exact (as for SGD
  with an infinitesimal step);
* an evaluation record in the layout of `unlearning/evaluation/record.py`, whose final
  `model_utility`, forget NLL and retain NLL the caller sets (for smoothing-rate sweeps).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from geffect.testing import fake_record, fake_train_record

METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_quality",
           "model_utility")


def run_config(method: str, lr: float = 1e-2, optimizer: str = "sgd", r: float | None = None,
               convention: str = "gls", k: int = 4) -> dict:
    hparams = {"r": r, "k": k, "convention": convention} if method == "sga" else {}
    return {"method": method, "hparams": hparams, "lr": lr, "optimizer": optimizer,
            "model": "fake-llama", "steps": 0}


def geffect_run_record(seed: int = 0, n_steps: int = 6, method: str = "ga", lr: float = 1e-2,
                       r: float | None = None, convention: str = "gls",
                       r_star: float | None = None) -> xr.Dataset:
    """A G-effect record whose risk follows the first-order prediction exactly.

    Args:
        r_star: when given, the recorded r* is replaced by r_star + N(0, 0.05^2) noise per
            step (a sweep whose r* sits at a known place; no longer tied to the Gram).
    """
    ds = fake_record(seed=seed, n_steps=n_steps, with_divergence=method == "sga", method=method)
    cfg = run_config(method, lr=lr, r=r, convention=convention)
    cfg["steps"] = n_steps
    ds.attrs["config"] = json.dumps(cfg)
    if method == "sga":
        ds.attrs.update(sga_r=float(r), r_star_convention=convention)
    inst = ds["geffect_instance"].sum("group").values                          # (S, I)
    start = ds["risk"].values[0]                                                # (I,)
    steps = np.concatenate([np.zeros((1, inst.shape[1])), np.cumsum(-lr * inst, 0)[:-1]])
    ds["risk"] = (("step", "instance"), start + steps)                          # (S, I)
    if r_star is not None and "r_star" in ds:
        rng = np.random.default_rng(seed + 1000)
        ds["r_star"] = ("step", r_star + 0.05 * rng.standard_normal(n_steps))
    return ds


def eval_run_record(seed: int = 0, n_steps: int = 6, instance_ids=None, splits=None,
                    utility: float = 0.5, forget_nll: float = 3.0,
                    retain_nll: float = 1.5) -> xr.Dataset:
    """An evaluation record at steps 0 and n_steps; the final values are the given ones."""
    rng = np.random.default_rng(seed + 2000)
    if instance_ids is None:
        splits = ["forget"] * 3 + ["retain"] * 3
        instance_ids = [f"{s}-{i}" for i, s in enumerate(splits)]
    split = np.array(splits, dtype=str)
    n = split.size
    summary = rng.random((2, len(METRICS)))                                     # (2, M)
    summary[:, METRICS.index("model_utility")] = [0.6, utility]
    nll = np.stack([np.full(n, 2.0), np.where(split == "forget", forget_nll, retain_nll)])
    return xr.Dataset(
        {"summary": (("step", "metric"), summary),
         "probability": (("step", "instance"), np.exp(-nll)),
         "rouge_l": (("step", "instance"), rng.random((2, n))),
         "truth_ratio": (("step", "instance"), rng.random((2, n))),
         "nll": (("step", "instance"), nll)},
        coords={"step": np.array([0, n_steps]), "metric": np.array(METRICS),
                "instance": np.arange(n), "instance_id": ("instance", np.array(instance_ids, dtype=str)),
                "split": ("instance", split)},
        attrs={"benchmark": "tofu", "model": "fake-llama"})


def write_run(path: Path, seed: int = 0, method: str = "ga", r: float | None = None,
              convention: str = "gls", n_steps: int = 6, lr: float = 1e-2, with_eval: bool = True,
              utility: float = 0.5, forget_nll: float = 3.0, retain_nll: float = 1.5,
              r_star: float | None = None) -> Path:
    """A run directory with config.json, train.nc, geffect.nc and (optionally) eval.nc."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    g = geffect_run_record(seed, n_steps, method, lr, r, convention, r_star)
    (path / "config.json").write_text(g.attrs["config"])
    g.to_netcdf(path / "geffect.nc")
    terms = ("forget_nll", "normal_nll") if method == "sga" else ("forget_nll",)
    t = fake_train_record(seed=seed, n_steps=n_steps, method=method, terms=terms, eval_metrics=())
    t["lr"] = ("step", np.full(n_steps, lr))
    t.attrs["config"] = g.attrs["config"]
    t.to_netcdf(path / "train.nc")
    if with_eval:
        ev = eval_run_record(seed, n_steps, g.instance_id.values, g.split.values, utility,
                             forget_nll, retain_nll)
        ev.to_netcdf(path / "eval.nc")
    return path


def write_sweep(root: Path, rates=(-0.5, 0.0, 0.4, 0.8), best: float = 0.4,
                r_star: float = 0.4, convention: str = "gls", n_steps: int = 6) -> list[Path]:
    """SGA runs named like `unlearning.sweep` does; final model utility peaks at r = best
    (0.8 - (r - best)^2), forget NLL grows with r (3 + r), and r* sits near `r_star`."""
    return [write_run(Path(root) / f"{convention}_r{r:+.3f}", seed=i, method="sga", r=r,
                      convention=convention, n_steps=n_steps, utility=0.8 - (r - best) ** 2,
                      forget_nll=3.0 + r, r_star=r_star)
            for i, r in enumerate(rates)]


def write_methods(root: Path, methods=("ga", "npo"), sga_r: float = 0.5, n_steps: int = 6) -> list[Path]:
    """One run per method plus one SGA run (for training-stability comparisons)."""
    dirs = [write_run(Path(root) / m, seed=i, method=m, n_steps=n_steps) for i, m in enumerate(methods)]
    return dirs + [write_run(Path(root) / "sga", seed=len(dirs), method="sga", r=sga_r, n_steps=n_steps)]
