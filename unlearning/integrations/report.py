"""Scalar summaries of a G-effect record, sent to experiment trackers while a run trains.

The netCDF record (`geffect.nc`, schema in `geffect/SCHEMA.md`) stays the full-detail source
of truth; trackers get a handful of curves per measured step. The keys `scalars(ds)` returns
(trackers that go through `transformers`' `rewrite_logs`, as TensorBoard does, show them with
the prefix `train/`):

    geffect/<probe>           unlearning (probe forget) and retaining (probe retain) G-effect:
                              ds.geffect.sum("group") (Wang et al., ICLR 2025, Definition 1;
                              an SGD step of size eta changes R_probe by about -eta * value)
    geffect/<probe>/<band>    the same summed over the groups of one band (embed, shallow,
                              middle, deep, lm; Wang et al. 2025, Fig. 2 bands)
    risk/<probe>              R_probe: the mean (risk_reduction "mean") or sum of the probe
                              instances' risks R_i at the step's parameters
    sga/cosine_ga_sga         whole-model cosine between grad L_GA = -g_f and grad L_SGA
                              (arXiv:2510.22376), from the per-group record (only SGA runs)
    sga/norm_ratio_ga_sga     whole-model ||grad L_SGA|| / ||grad L_GA|| (only SGA runs)
    sga/r_star                r* from the Gram summed over groups (only SGA runs)

`Reporter` sends these (and the training record's loss, grad norm, lr and NLLs, for
`geffect unlearn`) through the same callbacks `transformers.Trainer` uses for `report_to`, so
tags and tracker setup (WANDB_PROJECT, MLFLOW_TRACKING_URI, ...) are the Trainer's.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import xarray as xr

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
TRAIN_VARS = ("loss", "grad_norm", "lr", "nll_forget", "nll_retain")


def _step(ds: xr.Dataset) -> xr.Dataset:
    if "step" in ds.dims:
        if ds.sizes["step"] != 1:
            raise ValueError(f"scalars: expected one step of a record; found {ds.sizes['step']}")
        ds = ds.isel(step=0)
    return ds


def scalars(ds: xr.Dataset) -> dict[str, float]:
    """Tag -> value for one step of a G-effect record (see the module docstring)."""
    ds = _step(ds)
    out: dict[str, float] = {}
    for probe in ds.probe.values.tolist():
        ge = ds.geffect.sel(probe=probe)                                    # (G,)
        out[f"geffect/{probe}"] = float(ge.sum("group"))
        for band, value in ge.groupby("band").sum().to_series().items():
            out[f"geffect/{probe}/{band}"] = float(value)
        risk = ds.risk.where(ds.split == probe, drop=True)                  # (n_probe,)
        agg = risk.sum() if ds.attrs.get("risk_reduction") == "sum" else risk.mean()
        out[f"risk/{probe}"] = float(agg)
    if "gram" in ds:
        out.update(_divergence(ds))
    return out


def _divergence(ds: xr.Dataset) -> dict[str, float]:
    """Whole-model cosine and norm ratio from the per-group record.

    Per group: <grad L, g_f> = -cos * sqrt(Gff * ||grad L||^2) (zero where the cosine is NaN,
    i.e. a group with a zero gradient); summed over groups they give the whole-model values.
    """
    gff = ds.gram.sel(split_a="forget", split_b="forget").values           # (G,)
    gll = ds.grad_sq_norm.values                                            # (G,)
    glf = np.nan_to_num(-ds.cosine_ga_sga.values * np.sqrt(gff * gll))      # (G,)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = -glf.sum() / np.sqrt(gff.sum() * gll.sum())
        ratio = np.sqrt(gll.sum() / gff.sum())
    return {"sga/cosine_ga_sga": float(cos), "sga/norm_ratio_ga_sga": float(ratio),
            "sga/r_star": float(ds.r_star)}


def train_scalars(ds: xr.Dataset) -> dict[str, float]:
    """Tag -> value for one step of the engine's training record (`train.nc`)."""
    ds = _step(ds)
    return {name: float(ds[name]) for name in TRAIN_VARS if name in ds}


def parse_report_to(report_to: str | list[str] | None) -> list[str]:
    """'tensorboard,wandb' -> ['tensorboard', 'wandb']; None, '' and 'none' -> []."""
    if report_to is None:
        return []
    names = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [n.strip() for n in names if n.strip() and n.strip() != "none"]
    bad = sorted(set(names) - set(TRACKERS))
    if bad:
        raise ValueError(f"report_to: unknown trackers {bad}; expected some of {TRACKERS}")
    return names


class Reporter:
    """Send scalars to trackers through `transformers`' report_to callbacks (no Trainer).

    Args:
        report_to: tracker names (`TRACKERS`), a list or one comma-separated string.
        out: the run directory; TensorBoard event files go to `<out>/tensorboard`.
        run_name: the run's name in trackers that show one (default: the directory name).
    """

    def __init__(self, report_to, out: str | Path, run_name: str | None = None):
        from transformers import TrainerControl, TrainerState, TrainingArguments
        from transformers.integrations import INTEGRATION_TO_CALLBACK

        self.names = parse_report_to(report_to)
        out = Path(out)
        self.args = TrainingArguments(output_dir=str(out), report_to=self.names,
                                      run_name=run_name or out.name)
        self.state, self.control = TrainerState(), TrainerControl()
        self.callbacks = []
        for name in self.names:
            if importlib.util.find_spec(EXTRAS[name]) is None:
                raise ValueError(f"report_to {name!r} needs the package {EXTRAS[name]!r} "
                                 f"(pip install 'geffect[{name}]')")
            try:
                if name == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter
                    cb = INTEGRATION_TO_CALLBACK[name](tb_writer=SummaryWriter(str(out / "tensorboard")))
                else:
                    cb = INTEGRATION_TO_CALLBACK[name]()
            except (ImportError, RuntimeError) as err:
                raise ValueError(f"report_to {name!r} needs the package {EXTRAS[name]!r} "
                                 f"(pip install 'geffect[{name}]'): {err}") from err
            cb.on_train_begin(self.args, self.state, self.control, model=None)
            self.callbacks.append(cb)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Send `values` as of training step `step` to every tracker."""
        self.state.global_step = int(step)
        for cb in self.callbacks:
            cb.on_log(self.args, self.state, self.control, logs=dict(values), model=None)

    def log_step(self, step: int, train: xr.Dataset, geffects: xr.Dataset | None) -> None:
        """One engine step: the training record's scalars, plus the G-effect ones if measured."""
        self.log(step, {**train_scalars(train), **(scalars(geffects) if geffects is not None else {})})

    def close(self) -> None:
        for cb in self.callbacks:
            cb.on_train_end(self.args, self.state, self.control, model=None)
