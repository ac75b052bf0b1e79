"""Reductions of G-effect, training and evaluation records (xarray in, xarray out).

The G-effect of an objective L on a risk R (Wang et al. 2025, "Rethinking LLM Unlearning
Objectives: A Gradient Perspective and Go Beyond", Eq. 3) is e = <grad L, grad R>; an SGD step
of size eta changes R by about -eta * e. Recorded per parameter group, it is additive over
groups, so per-layer, per-component and per-band G-effects are plain sums over `group`, and the
total is the sum over every group. Nothing here rescales or re-signs: values stay as recorded.

The G-effect paper reports shallow / middle / deep layer bands; the record carries them as the
`band` coordinate on `group` (with `embed` and `lm` for the parameters outside the blocks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .records import Run, expand_run_dirs, load_run

BANDS = ("embed", "shallow", "middle", "deep", "lm")
COMPONENTS = ("embed", "attn", "mlp", "norm", "lm_head")
PROBES = ("forget", "retain")
TRAIN_VARS = ("loss", "loss_term", "grad_norm", "lr", "nll_forget", "nll_retain")
GEFFECT_VARS = ("geffect", "objective_loss", "grad_sq_norm", "risk_grad_sq_norm", "gram",
                "r_star", "r_star_group", "cosine_ga_sga", "norm_ratio_ga_sga")


# ---- over groups --------------------------------------------------------------------------

def total(da: xr.DataArray) -> xr.DataArray:
    """Sum over every parameter group: the whole-model G-effect (or squared norm); NaN where
    every group is NaN (a step the run did not measure), never a made-up 0."""
    return da.sum("group", keep_attrs=True, min_count=1)


def by_key(da: xr.DataArray, key: str) -> xr.DataArray:
    """Sum over the groups sharing a `key` coordinate ("layer", "component" or "band").

    Bands and components come back in the canonical order (embed first, lm last) rather than
    alphabetically; only values present in the record are kept.
    """
    if key not in da.coords or "group" not in da[key].dims:
        raise ValueError(f"expected a coordinate {key!r} on dim 'group'; found coords "
                         f"{sorted(da.coords)}")
    out = da.groupby(key).sum(keep_attrs=True, min_count=1)
    order = {"band": BANDS, "component": COMPONENTS}.get(key)
    if order is not None:
        present = [v for v in order if v in out[key].values]
        extra = [v for v in out[key].values if v not in order]
        out = out.sel({key: present + extra})
    return out


by = by_key  # short alias: reduce.by(da, "band")


def by_layer(da: xr.DataArray, blocks_only: bool = False) -> xr.DataArray:
    """Sum over groups per transformer block; layer -1 collects groups outside the blocks."""
    out = by_key(da, "layer")
    return out.sel(layer=out.layer >= 0) if blocks_only else out


def by_component(da: xr.DataArray) -> xr.DataArray:
    return by_key(da, "component")


def by_band(da: xr.DataArray) -> xr.DataArray:
    return by_key(da, "band")


def cumulative(da: xr.DataArray, dim: str = "step") -> xr.DataArray:
    """Running sum along `dim` (NaN counts as 0): the accumulated G-effect over training."""
    return da.fillna(0).cumsum(dim, keep_attrs=True)


def forget_vs_retain(ds: xr.Dataset) -> xr.Dataset:
    """Whole-model unlearning (probe=forget) and retaining (probe=retain) G-effects per step."""
    e = total(ds["geffect"])                                        # (step, probe)
    return xr.Dataset({"unlearning": e.sel(probe="forget", drop=True),
                       "retaining": e.sel(probe="retain", drop=True)})


def probe_risk(ds: xr.Dataset) -> xr.DataArray:
    """R_probe per step from the recorded instance risks R_i of each probe split.

    Returns (step, probe). R_probe is the mean of R_i over the probe's instances, their sum
    when the record's `risk_reduction` attr is "sum", or their `n_tokens`-weighted mean when
    it is "token" (geffect/SCHEMA.md, *Risk*).
    """
    risk = ds["risk"]                                               # (step, instance)
    how = ds.attrs.get("risk_reduction", "mean")
    if how not in ("mean", "sum", "token"):
        raise ValueError(f"risk_reduction must be 'mean', 'sum' or 'token', found {how!r}")
    if how == "token":
        w = ds["n_tokens"].astype(float)                            # (instance,)
        means = [(risk * w).where(risk.split == p).sum("instance") / w.where(risk.split == p).sum()
                 for p in PROBES]
    else:
        means = [getattr(risk.where(risk.split == p), how)("instance") for p in PROBES]
    return xr.concat(means, dim=xr.DataArray(list(PROBES), dims="probe", name="probe"))


QUANTILES = (0.25, 0.5, 0.75)


def probe_quantiles(da: xr.DataArray, q=QUANTILES) -> xr.DataArray:
    """Quantiles over each probe's instances of a per-instance quantity (NaN skipped).

    `da` has an `instance` dim with a `split` coordinate, e.g. the instance G-effects
    `total(ds.geffect_instance)` or the risks `ds.risk`. Returns (..., probe, quantile), with
    numpy's default (linear) interpolation: the 0.5 quantile is the median over instances, the
    0.25 and 0.75 quantiles bound the inter-quartile range.
    """
    if "split" not in da.coords or da["split"].dims != ("instance",):
        raise ValueError(f"expected a 'split' coordinate on dim 'instance'; found coords {sorted(da.coords)}")
    drop = [c for c in da.coords if "instance" in da[c].dims]
    parts = [da.where(da.split == p, drop=True).drop_vars(drop).quantile(list(q), "instance")
             for p in PROBES]
    out = xr.concat(parts, dim=xr.DataArray(list(PROBES), dims="probe", name="probe"))
    return out.transpose(..., "probe", "quantile")


def divergence(ds: xr.Dataset, by: str | None = "band") -> xr.Dataset:
    """GA-vs-SGA cosine and norm ratio of whole bands (or the whole model), from group values.

    Per group the record holds c_g = cos(grad L_GA, grad L_SGA), q_g = ||grad L_SGA|| /
    ||grad L_GA|| and ||grad L_GA||_g^2 (= <g_f, g_f>, the Gram's forget-forget entry;
    without `gram`, ||grad L_SGA||_g^2 / q_g^2 from `grad_sq_norm`). Hence
    ||grad L_SGA||_g^2 = q_g^2 ||grad L_GA||_g^2 and <grad L_GA, grad L_SGA>_g =
    c_g ||grad L_GA||_g ||grad L_SGA||_g, and for a set B of groups (concatenated gradients):
        cos_B = sum_B <GA, SGA>_g / sqrt(sum_B ||GA||_g^2 * sum_B ||SGA||_g^2),
        q_B   = sqrt(sum_B ||SGA||_g^2 / sum_B ||GA||_g^2).

    Returns:
        Dataset with `cosine` and `norm_ratio`, dims (step[, by]).
    """
    need = ("cosine_ga_sga", "norm_ratio_ga_sga", "gram" if "gram" in ds else "grad_sq_norm")
    for v in need:
        if v not in ds:
            raise ValueError(f"GA-vs-SGA divergence needs {v!r} (an SGA run's G-effect record); "
                             f"found {list(ds.data_vars)}")
    q = ds["norm_ratio_ga_sga"]                                     # (step, group)
    if "gram" in ds:
        ga_sq = ds["gram"].sel(split_a="forget", split_b="forget", drop=True)
    else:
        ga_sq = ds["grad_sq_norm"] / q ** 2
    sga_sq = ga_sq * q ** 2
    dot = ds["cosine_ga_sga"] * np.sqrt(ga_sq * sga_sq)
    parts = xr.Dataset({"dot": dot, "ga_sq": ga_sq, "sga_sq": sga_sq})
    summed = parts.sum("group", min_count=1) if by is None else parts.map(lambda v: by_key(v, by))
    return xr.Dataset({"cosine": summed.dot / np.sqrt(summed.ga_sq * summed.sga_sq),
                       "norm_ratio": np.sqrt(summed.sga_sq / summed.ga_sq)})


# ---- joins ---------------------------------------------------------------------------------

def last_valid(da: xr.DataArray, dim: str) -> xr.DataArray:
    """The last non-NaN value along `dim` (NaN where there is none)."""
    valid = da.notnull()
    idx = (valid * xr.DataArray(np.arange(da.sizes[dim]), dims=dim)).max(dim)
    out = da.isel({dim: idx.astype(int)}).drop_vars(dim, errors="ignore")
    return out.where(valid.any(dim))


def first_valid(da: xr.DataArray, dim: str) -> xr.DataArray:
    """The first non-NaN value along `dim` (NaN where there is none)."""
    return last_valid(da.isel({dim: slice(None, None, -1)}), dim)


def _by_id(da: xr.DataArray) -> xr.DataArray:
    """Index the `instance` dim by the `instance_id` strings (so records can be aligned)."""
    ids = da["instance_id"].values.astype(str) if "instance_id" in da.coords else da.instance.values
    keep = [c for c in da.coords if "instance" not in da[c].dims]
    return da.drop_vars([c for c in da.coords if c not in keep]).assign_coords(instance=ids)


def instance_table(geffect_ds: xr.Dataset, eval_ds: xr.Dataset | None = None,
                   eval_step: int | None = None) -> xr.Dataset:
    """One row per instance: its accumulated G-effect joined with its evaluation metrics.

    `geffect_cum` is the per-instance G-effect <grad L, grad R_i> summed over groups and over
    all recorded steps; `split` comes from the G-effect record. Evaluation per-instance
    variables (probability, rouge_l, truth_ratio, nll, ...) are taken at `eval_step` (default:
    the last evaluated step). Rows are the instances present in both records, keyed by
    `instance_id`.
    """
    ge = geffect_ds["geffect_instance"]                             # (step, instance, group)
    table = xr.Dataset({"geffect_cum": _by_id(total(ge).sum("step")),
                        "split": _by_id(geffect_ds["split"])})
    if eval_ds is None:
        return table
    ev = eval_ds.sel(step=eval_step) if eval_step is not None else eval_ds.isel(step=-1)
    per_instance = [v for v in ev.data_vars if ev[v].dims == ("instance",)]
    if not per_instance:
        raise ValueError(f"eval record has no per-instance variables; found {list(ev.data_vars)}")
    metrics = xr.Dataset({v: _by_id(ev[v]) for v in per_instance})
    table, metrics = xr.align(table, metrics, join="inner")
    return table.merge(metrics)


# ---- across runs ---------------------------------------------------------------------------

def _eval_part(ev: xr.Dataset) -> xr.Dataset:
    """The evaluation summary on its own `eval_step` dim, plus the mean eval NLL per split."""
    part = xr.Dataset({"summary": ev["summary"].rename(step="eval_step")})
    if "nll" in ev and "split" in ev.coords:
        splits = sorted(set(ev["split"].values.astype(str)))
        nll = [ev["nll"].where(ev.split == s).mean("instance") for s in splits]
        part["eval_nll"] = xr.concat(nll, xr.DataArray(splits, dims="split")).rename(step="eval_step")
    return part


def run_summary(run: Run) -> xr.Dataset:
    """The per-step quantities of one run that a sweep compares, on shared dims."""
    parts: list[xr.Dataset] = []
    if run.train is not None:
        parts.append(run.train[[v for v in TRAIN_VARS if v in run.train]])
    if run.geffect is not None:
        g = run.geffect
        part = g[[v for v in GEFFECT_VARS if v in g]]
        part["geffect_total"] = total(g["geffect"])                # (step, probe)
        part["n_probe_instances"] = xr.DataArray(                 # (probe,)
            [int((g["split"] == p).sum()) for p in PROBES], coords={"probe": list(PROBES)})
        if "geffect_instance" in g:
            part["geffect_quantile"] = probe_quantiles(total(g["geffect_instance"]))  # (step, probe, q)
        if "risk" in g:
            part["probe_risk"] = probe_risk(g)                      # (step, probe)
            part["risk_quantile"] = probe_quantiles(g["risk"])      # (step, probe, quantile)
        parts.append(part)
    if run.eval is not None:
        parts.append(_eval_part(run.eval))
    if not parts:
        raise ValueError(f"run {run.path} has no records")
    ds = xr.merge(parts, join="outer", combine_attrs="drop", compat="override")
    return ds.drop_vars([c for c in ds.coords if "instance" in ds[c].dims], errors="ignore")


def _run_names(runs: list[Run]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.path.parent.name}/{r.name}" for r in runs]


def combine_runs(run_dirs: list[Path | str]) -> xr.Dataset:
    """Per-run records stacked along `run`, with the sweep parameters as `run` coordinates.

    Coordinates on `run`: `method`, `smoothing_rate` (SGA's r; 0 for GA; NaN otherwise),
    `convention` (SGA's sign reading), `lr`, `optimizer` and `path`, read from each run's
    config. Variables keep their record names (train: loss, grad_norm, nll_forget, ...;
    G-effect: geffect, r_star, cosine_ga_sga, ...; plus geffect_total (run, step, probe),
    probe_risk, and geffect_quantile / risk_quantile (run, step, probe, quantile): quartiles
    over each probe's instances, `probe_quantiles`), with the evaluation summary on its own dim `eval_step`. Steps, terms and
    metrics are outer-joined (NaN where a run lacks them). Per-group variables are kept only
    when every run has the same parameter groups.

    Args:
        run_dirs: run directories, or sweep directories whose subdirectories are runs.
    """
    runs = [load_run(p) for p in expand_run_dirs(run_dirs)]
    parts = [run_summary(r) for r in runs]
    groups = [tuple(p.group.values) for p in parts if "group" in p.dims]
    if len(set(groups)) > 1:
        parts = [p.drop_dims("group", errors="ignore") for p in parts]
    ds = xr.concat(parts, dim="run", join="outer", coords="minimal", compat="override",
                   combine_attrs="drop", data_vars="all")
    names = _run_names(runs)
    ds = ds.assign_coords(
        run=names,
        method=("run", [r.method for r in runs]),
        smoothing_rate=("run", [r.smoothing_rate for r in runs]),
        convention=("run", [r.convention for r in runs]),
        lr=("run", [float(r.config.get("lr", np.nan)) for r in runs]),
        optimizer=("run", [str(r.config.get("optimizer", "")) for r in runs]),
        path=("run", [str(r.path) for r in runs]))
    ge = next((r.geffect for r in runs if r.geffect is not None), None)
    for key in ("sign_convention", "definitions"):
        if ge is not None and key in ge.attrs:
            ds.attrs[key] = ge.attrs[key]
    ds.attrs["description"] = "runs combined by analysis.reduce.combine_runs"
    return ds


def _nll_source(sweep: xr.Dataset, split: str) -> tuple[xr.DataArray, str] | None:
    """Where a run's forget / retain NLL comes from, best first (see `final_metrics`)."""
    if "eval_nll" in sweep and split in sweep["split"].values:
        src = sweep["eval_nll"].sel(split=split, drop=True)
        if bool(src.notnull().any()):
            return src, "eval_step"
    if "probe_risk" in sweep and bool(sweep["probe_risk"].sel(probe=split).notnull().any()):
        return sweep["probe_risk"].sel(probe=split, drop=True), "step"
    if f"nll_{split}" in sweep:
        return sweep[f"nll_{split}"], "step"
    return None


def final_metrics(sweep: xr.Dataset) -> xr.Dataset:
    """Per run, the final value of every evaluation metric and of the forget/retain NLL.

    Evaluation metrics are the last evaluated step of `summary` (`initial_<metric>` is the
    first). `nll_forget` / `nll_retain` come from, in this order: the evaluation record's mean
    NLL on the forget / retain split; the G-effect record's probe risk (fixed probe instances,
    measured before each step's update, so the last value lags one step); the training
    record's batch NLL (noisy: a different batch each step). Their `initial_` values come from
    the first step of the same source.
    """
    out = xr.Dataset(coords={c: sweep[c] for c in sweep["run"].coords})
    if "summary" in sweep:
        for m in sweep.metric.values:
            s = sweep["summary"].sel(metric=m, drop=True)
            out[str(m)] = last_valid(s, "eval_step")
            out[f"initial_{m}"] = first_valid(s, "eval_step")
    for split in PROBES:
        found = _nll_source(sweep, split)
        if found is not None:
            src, dim = found
            out[f"nll_{split}"] = last_valid(src, dim)
            out[f"initial_nll_{split}"] = first_valid(src, dim)
    return out
