"""The evaluation record: an xarray Dataset with a written layout, and its JSON summary.

Layout (one evaluation; the engine concatenates records along `step` during training):
    dims        step (length 1), metric, instance
    coords      step (int), metric (str: open-unlearning-compatible names),
                instance (int position), on instance: instance_id (the data layer's stable
                ids, e.g. "tofu/3961"), split (forget, retain, real_authors, world_facts,
                holdout, knowmem_forget, ...), n_tokens (label tokens scored)
    variables   summary (step, metric) float64;
                per-instance (step, instance) float64, NaN where a metric does not apply:
                nll, probability, perplexity, rouge_l, rouge_l_f1, truth_ratio, truth_ratio_gm,
                extraction_strength, exact_memorization, mia_loss, mia_zlib, mia_min_k,
                mia_min_k_plus_plus
    attrs       benchmark, forget_split, model, created_at, creation_library,
                creation_library_version, definitions (JSON: per metric formula, averaging,
                citation), notes (JSON: why a metric is NaN, which data are absent), settings
                (JSON: max_instances, max_new_tokens, ...)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import xarray as xr

from . import definitions

VARIABLES = tuple(definitions.PER_INSTANCE)


@dataclass
class Part:
    """Per-instance values of one evaluated set (one `split` label)."""

    split: str
    instance_id: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    n_tokens: np.ndarray | None = None

    def __post_init__(self):
        unknown = set(self.values) - set(VARIABLES)
        if unknown:
            raise ValueError(f"unknown per-instance variables {sorted(unknown)}; expected a "
                             f"subset of {VARIABLES}")
        for k, v in self.values.items():
            if len(v) != len(self.instance_id):
                raise ValueError(f"{self.split}/{k}: {len(v)} values for "
                                 f"{len(self.instance_id)} instances")


def _library_version() -> str:
    try:
        return version("geffect")
    except PackageNotFoundError:
        return "unknown"


def build_record(parts: list[Part], summary: dict[str, float], *, benchmark: str,
                 model_name: str, step: int = 0, notes: dict | None = None,
                 settings: dict | None = None, forget_split: str = "") -> xr.Dataset:
    """Assemble parts and summary numbers into the record layout of this module's docstring."""
    ids = [i for p in parts for i in p.instance_id]
    splits = [p.split for p in parts for _ in p.instance_id]
    n_tok = np.concatenate([p.n_tokens if p.n_tokens is not None else np.zeros(len(p.instance_id))
                            for p in parts]) if parts else np.zeros(0)
    data = {}
    for var in VARIABLES:
        col = np.concatenate([np.asarray(p.values[var], float) if var in p.values
                              else np.full(len(p.instance_id), np.nan) for p in parts]) \
            if parts else np.zeros(0)
        data[var] = (("step", "instance"), col[None, :])
    names = list(summary)
    data["summary"] = (("step", "metric"), np.array([[float(summary[m]) for m in names]]))
    used = {m: definitions.SUMMARY.get(m, {"formula": "see notes"}) for m in names}
    used.update({v: definitions.PER_INSTANCE[v] for v in VARIABLES})
    ds = xr.Dataset(data, coords={
        "step": [int(step)], "metric": np.array(names, dtype=str),
        "instance": np.arange(len(ids)),
        "instance_id": ("instance", np.array(ids, dtype=str)),
        "split": ("instance", np.array(splits, dtype=str)),
        "n_tokens": ("instance", n_tok.astype(np.int64)),
    })
    ds.attrs = {
        "benchmark": benchmark, "forget_split": forget_split, "model": model_name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "creation_library": "geffect", "creation_library_version": _library_version(),
        "definitions": json.dumps(used), "notes": json.dumps(notes or {}),
        "settings": json.dumps(settings or {}),
    }
    return ds


def summary_json(ds: xr.Dataset, step: int | None = None) -> dict:
    """The summary of one step (the last by default) as {open-unlearning name: float}.

    NaN becomes None (valid JSON); the record's notes (e.g. why forget_quality is NaN) come
    along under "notes", with "benchmark" and "step".
    """
    row = ds["summary"].isel(step=-1) if step is None else ds["summary"].sel(step=step)
    out: dict = {"benchmark": ds.attrs.get("benchmark", ""), "step": int(row["step"])}
    for m, v in zip(row["metric"].values.tolist(), row.values.tolist()):
        out[str(m)] = None if (v is None or math.isnan(v)) else float(v)
    notes = json.loads(ds.attrs.get("notes", "{}") or "{}")
    if notes:
        out["notes"] = notes
    return out
