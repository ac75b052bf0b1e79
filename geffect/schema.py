"""The record schema: dim, coordinate, variable and attribute names, and `validate(ds)`.

Mirrors `geffect/SCHEMA.md` (the written definitions). The G-effect follows Wang et al.,
"Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond" (ICLR 2025),
Definition 1: e = grad R(D)^T grad L(D_u), evaluated at the step's parameters, without the
learning rate. This module imports no torch, so analysis code can use it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = "1"

SIGN_CONVENTION = (
    "geffect = <dL/dtheta, dR/dtheta> summed over the group's parameters, at the step's "
    "parameters, without the learning rate; an SGD step of size eta changes R by about "
    "-eta*geffect; unlearning wants geffect(probe=forget) < 0 (forget risk rises) and "
    "geffect(probe=retain) >= 0 (retain risk does not rise)")

COMPONENTS = ("embed", "attn", "mlp", "norm", "lm_head", "other")
BANDS = ("embed", "shallow", "middle", "deep", "lm")
PROBES = ("forget", "retain")
GRAM_SPLITS = ("forget", "normal")
REDUCTIONS = ("mean", "sum", "token")
CONVENTIONS = ("gls", "split")

DEFINITIONS = {
    "geffect": "<grad L, grad R_probe> restricted to the group; R_probe = mean or sum over the "
               "probe split's instances of R_i, or (risk_reduction 'token') sum_i n_i R_i / "
               "sum_i n_i, HF's outputs.loss on the probe batch",
    "geffect_instance": "<grad L, grad R_i> restricted to the group, for probe instance i",
    "geffect_pointwise": "the PG-effect <grad L_s, grad R_probe> restricted to the group, L_s "
                         "objective instance s's own objective (Wang et al. 2025), with "
                         "L = sum_s sample_weight_s L_s: (geffect_pointwise * sample_weight)"
                         ".sum('sample') == geffect. grad L_s = grad L(s) / sample_weight_s, "
                         "grad L(s) the part of grad L that flows through instance s's rows; "
                         "sample_weight 1 (the contribution itself) when the objective gave "
                         "no weights; NaN where no objective backward",
    "sample_weight": "w_s, objective instance s's weight in the step's loss L = sum_s w_s L_s "
                     "(1/B, or n_s/N under loss_reduction 'token'; 1 when not given)",
    "sample_id": "instance_id of objective instance s at that step ('' for padding)",
    "risk": "R_i, mean token NLL of probe instance i over its answer tokens (HF shift)",
    "objective_loss": "value of the objective L at the step (NaN if not given)",
    "grad_sq_norm": "||grad L||^2 restricted to the group",
    "risk_grad_sq_norm": "||grad R_probe||^2 restricted to the group",
    "gram": "inner products restricted to the group of g_forget (grad of the mean forget NLL "
            "on the step's forget rows) and g_normal (grad of the mean NLL over the normal rows)",
    "cosine_ga_sga": "cosine between grad L_GA = -g_forget and grad L_SGA (the step's "
                     "objective gradient), restricted to the group",
    "norm_ratio_ga_sga": "||grad L_SGA|| / ||grad L_GA|| restricted to the group",
    "r_star": "smoothing rate minimising ||grad L_SGA(r)|| from the Gram summed over groups: "
              "gls: K/(K-1)*(Gff-Gfn)/(Gff-2Gfn+Gnn); split: K/(K-1)*(Gff+Gfn)/(Gff+2Gfn+Gnn)",
    "r_star_group": "r_star from the group's own Gram",
    "loss": "training objective value at the step",
    "loss_term": "named parts of the objective (Loss.terms)",
    "grad_norm": "global L2 norm of the update direction before clipping",
    "lr": "learning rate used at the step",
    "nll_forget": "mean token NLL on the step's forget batch",
    "nll_retain": "mean token NLL on the step's retain batch (NaN between monitoring steps "
                  "when the objective reads no retain split)",
}

REQUIRED_ATTRS = ("config", "model", "method", "creation_library", "creation_library_version",
                  "created_at", "git_commit", "schema_version")
GEFFECT_ATTRS = ("sign_convention", "definitions", "risk_reduction", "fallback_groups")


@dataclass(frozen=True)
class Var:
    dims: tuple[str, ...]
    kind: str = "f"          # numpy dtype kind family: "f" float, "i" int, "U" string
    required: bool = True


GEFFECT_VARS = {
    "geffect": Var(("step", "probe", "group")),
    "geffect_instance": Var(("step", "instance", "group")),
    "geffect_pointwise": Var(("step", "sample", "probe", "group")),
    "sample_id": Var(("step", "sample"), "U"),
    "risk": Var(("step", "instance")),
    "objective_loss": Var(("step",)),
    "grad_sq_norm": Var(("step", "group")),
    "risk_grad_sq_norm": Var(("step", "probe", "group")),
    "gram": Var(("step", "group", "split_a", "split_b"), required=False),
    "cosine_ga_sga": Var(("step", "group"), required=False),
    "norm_ratio_ga_sga": Var(("step", "group"), required=False),
    "r_star": Var(("step",), required=False),
    "r_star_group": Var(("step", "group"), required=False),
}

EVAL_VARS = {          # unlearning.evaluation's record; per-instance metrics are optional
    "summary": Var(("step", "metric")),
}

TRAIN_VARS = {
    "loss": Var(("step",)),
    "loss_term": Var(("step", "term")),
    "grad_norm": Var(("step",)),
    "lr": Var(("step",)),
    "nll_forget": Var(("step",)),
    "nll_retain": Var(("step",)),
}

# coordinate name -> (dim it lives on, dtype kind)
GEFFECT_COORDS = {
    "step": ("step", "i"), "group": ("group", "U"), "layer": ("group", "i"),
    "component": ("group", "U"), "n_params": ("group", "i"), "band": ("group", "U"),
    "instance": ("instance", "i"), "instance_id": ("instance", "U"), "split": ("instance", "U"),
    "n_tokens": ("instance", "i"), "probe": ("probe", "U"), "sample": ("sample", "i"),
}
TRAIN_COORDS = {"step": ("step", "i"), "term": ("term", "U")}
EVAL_COORDS = {"step": ("step", "i"), "metric": ("metric", "U"), "instance": ("instance", "i"),
               "instance_id": ("instance", "U"), "split": ("instance", "U"),
               "n_tokens": ("instance", "i")}
EVAL_ATTRS = ("benchmark", "model", "created_at", "creation_library",
              "creation_library_version")
DIVERGENCE_COORDS = {"split_a": ("split_a", "U"), "split_b": ("split_b", "U")}


KINDS = ("geffect", "train", "eval")


class SchemaError(ValueError):
    """A record does not follow the schema; the message names what was expected and found."""


def _kind_ok(dtype: np.dtype, kind: str) -> bool:
    if kind == "f":
        return dtype.kind == "f"
    if kind == "i":
        return dtype.kind in "iu"
    return dtype.kind in "UOS"          # strings: fixed-width, object (netCDF vlen) or bytes


def _check_var(ds, name: str, spec: Var, errors: list[str]) -> None:
    if name not in ds.data_vars:
        if spec.required:
            errors.append(f"missing variable {name!r} with dims {spec.dims}")
        return
    dims = tuple(d for d in ds[name].dims if d != "run")
    if dims != spec.dims:
        errors.append(f"variable {name!r}: expected dims {spec.dims} (plus optional leading "
                      f"'run'), found {ds[name].dims}")
    if not _kind_ok(ds[name].dtype, spec.kind):
        errors.append(f"variable {name!r}: expected dtype kind {spec.kind!r}, found "
                      f"{ds[name].dtype}")


def _check_coords(ds, coords: dict, errors: list[str]) -> None:
    for name, (dim, kind) in coords.items():
        if dim not in ds.dims:
            continue
        if name not in ds.coords:
            errors.append(f"missing coordinate {name!r} on dim {dim!r}")
            continue
        if ds[name].dims != (dim,):
            errors.append(f"coordinate {name!r}: expected dims ({dim!r},), found {ds[name].dims}")
        if not _kind_ok(ds[name].dtype, kind):
            errors.append(f"coordinate {name!r}: expected dtype kind {kind!r}, found "
                          f"{ds[name].dtype}")


def _check_attrs(ds, names: tuple[str, ...], errors: list[str]) -> None:
    for a in names:
        if a not in ds.attrs:
            errors.append(f"missing attr {a!r}")
    for a in ("config", "definitions", "fallback_groups"):
        if a in ds.attrs:
            try:
                json.loads(ds.attrs[a])
            except (TypeError, ValueError):
                errors.append(f"attr {a!r}: expected a JSON string, found {ds.attrs[a]!r:.80}")
    if "risk_reduction" in ds.attrs and ds.attrs["risk_reduction"] not in REDUCTIONS:
        errors.append(f"attr 'risk_reduction': expected one of {REDUCTIONS}, found "
                      f"{ds.attrs['risk_reduction']!r}")
    for k, v in ds.attrs.items():
        if not isinstance(v, (str, int, float, np.number, np.ndarray, list, tuple)):
            errors.append(f"attr {k!r}: expected a netCDF-safe str/number/list, found "
                          f"{type(v).__name__}")


def _check_values(ds, errors: list[str]) -> None:
    if "component" in ds.coords:
        bad = sorted(set(map(str, ds["component"].values)) - set(COMPONENTS))
        if bad:
            errors.append(f"coordinate 'component': expected values in {COMPONENTS}, found {bad}")
    if "band" in ds.coords:
        bad = sorted(set(map(str, ds["band"].values)) - set(BANDS))
        if bad:
            errors.append(f"coordinate 'band': expected values in {BANDS}, found {bad}")
    if "probe" in ds.coords and "split" in ds.coords:
        bad = sorted(set(map(str, ds["split"].values)) - set(map(str, ds["probe"].values)))
        if bad:
            errors.append(f"coordinate 'split': every instance split must be a probe "
                          f"{list(map(str, ds['probe'].values))}, found {bad}")
    for dim in ("group", "instance", "step"):
        if dim in ds.coords and len(set(ds[dim].values.tolist())) != ds.sizes[dim]:
            errors.append(f"coordinate {dim!r}: expected unique values, found duplicates")
    if "gram" in ds.data_vars:
        for c in ("split_a", "split_b"):
            if c in ds.coords and tuple(map(str, ds[c].values)) != GRAM_SPLITS:
                errors.append(f"coordinate {c!r}: expected {GRAM_SPLITS}, found "
                              f"{tuple(map(str, ds[c].values))}")


def validate(ds, kind: str = "geffect"):
    """Check a record against the schema; return it unchanged, or raise `SchemaError`.

    Extra variables, coordinates and attrs are allowed. A leading `run` dim (sweeps) is
    allowed on every variable.

    Args:
        ds: an `xarray.Dataset`.
        kind: "geffect" (the G-effect record), "train" (the engine's training record) or
            "eval" (`unlearning.evaluation`'s record: `summary (step, metric)` and optional
            per-instance `(step, instance)` metrics).
    """
    if kind not in KINDS:
        raise SchemaError(f"kind must be one of {KINDS}, found {kind!r}")
    if not hasattr(ds, "data_vars"):
        raise SchemaError(f"expected an xarray.Dataset, found {type(ds).__name__}")
    errors: list[str] = []
    if kind == "geffect":
        for name, spec in GEFFECT_VARS.items():
            _check_var(ds, name, spec, errors)
        _check_coords(ds, GEFFECT_COORDS, errors)
        if "gram" in ds.data_vars:
            _check_coords(ds, DIVERGENCE_COORDS, errors)
        _check_attrs(ds, REQUIRED_ATTRS + GEFFECT_ATTRS, errors)
    elif kind == "eval":
        _check_var(ds, "summary", EVAL_VARS["summary"], errors)
        for name in ds.data_vars:
            dims = tuple(d for d in ds[name].dims if d != "run")
            if name != "summary" and dims != ("step", "instance"):
                errors.append(f"variable {name!r}: per-instance metrics expect dims "
                              f"('step', 'instance'), found {ds[name].dims}")
        _check_coords(ds, EVAL_COORDS, errors)
        _check_attrs(ds, EVAL_ATTRS, errors)
    else:
        for name, spec in TRAIN_VARS.items():
            _check_var(ds, name, spec, errors)
        for name in ds.data_vars:
            if name.startswith("eval_") and tuple(d for d in ds[name].dims if d != "run") \
                    != ("step",):
                errors.append(f"variable {name!r}: eval_<metric> expects dims ('step',), "
                              f"found {ds[name].dims}")
        _check_coords(ds, TRAIN_COORDS, errors)
        _check_attrs(ds, REQUIRED_ATTRS, errors)
    _check_values(ds, errors)
    for name in ds.data_vars:
        if name in ds.dims:
            errors.append(f"variable {name!r} is named like a dim; rename it")
    if errors:
        raise SchemaError(f"record (kind={kind!r}) does not follow schema v{SCHEMA_VERSION}:\n  "
                          + "\n  ".join(errors))
    return ds


def band_of(layer: int, n_layers: int, component: str) -> str:
    """Coarse band of the paper's Fig. 2: embed / shallow / middle / deep (thirds) / lm."""
    if component == "embed":
        return "embed"
    if component == "lm_head" or layer < 0:
        return "lm"
    third = layer * 3 // max(n_layers, 1)                           # 0, 1, 2
    return BANDS[1 + min(third, 2)]


def git_commit() -> str:
    """The repository's HEAD commit, or "unknown" outside a git checkout."""
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_attrs(*, config: dict | str | None = None, model: str = "unknown",
               method: str = "unknown", kind: str = "geffect", risk_reduction: str = "mean",
               fallback_groups: list[str] | tuple[str, ...] = (), **extra) -> dict:
    """Provenance and definition attrs for a record; every value netCDF-safe.

    `config` and `fallback_groups` are stored as JSON strings (netCDF reads a one-element
    list attr back as a scalar, so lists of strings do not round-trip).
    """
    from datetime import datetime, timezone
    from importlib.metadata import PackageNotFoundError, version

    try:
        lib_version = version("geffect")
    except PackageNotFoundError:
        lib_version = "0+unknown"
    if config is None:
        config = {}
    attrs = {
        "config": config if isinstance(config, str) else json.dumps(config, sort_keys=True,
                                                                     default=str),
        "model": str(model), "method": str(method),
        "creation_library": "geffect", "creation_library_version": lib_version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "schema_version": SCHEMA_VERSION,
    }
    if kind == "geffect":
        if risk_reduction not in REDUCTIONS:
            raise ValueError(f"risk_reduction must be one of {REDUCTIONS}, got {risk_reduction!r}")
        attrs.update(sign_convention=SIGN_CONVENTION, definitions=json.dumps(DEFINITIONS),
                     risk_reduction=risk_reduction,
                     fallback_groups=json.dumps(list(fallback_groups)))
    attrs.update(extra)
    return attrs


def fallback_groups(ds) -> list[str]:
    """The groups a record measured with torch.func instead of a kernel."""
    return list(json.loads(ds.attrs.get("fallback_groups", "[]")))
