"""Records of every method on a tiny float64 model, as the engine wrote them before issue 17.

`golden_records.json` holds, per case, the training record (loss, loss terms, grad norm, lr,
forget/retain NLL of each step), checksums of the final parameters and, for one SGA case, the
per-step sums of the G-effect record. It was written by the engine *before* the speed-ups of
issue 17 (label log-probs by one fused cross-entropy, cached per split, fused/foreach
optimizers, monitoring every `monitor_every` steps), so `test_golden_records.py` checks that
those changes leave every number as it was.

Issue 11 changed definitions after these were written, so the cases pin the old ones: the
row-mean `loss_reduction="sequence"` and the previous defaults of SimNPO (no forget weight),
TNPO / WTNPO (beta 0.1, WTNPO alpha 1) and WGA (beta 1). The point-wise G-effect is now the
paper's PG-effect with its `sample_weight` (issue 11), so the G-effect summary compares
`geffect_pointwise * sample_weight`, the old contribution. Regenerate only after a deliberate change of a
definition, and say so in the commit:

    PYTHONPATH=$PWD python -m tests.unlearning.golden_records --write
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import xarray as xr

BASE = dict(model="tiny-llama", forget_split="forget01", retain_split="retain99", n_forget=8,
            n_retain=32, steps=3, batch_size=2, max_length=256, lr=1e-3, weight_decay=0.01,
            dtype="float64", loss_reduction="sequence")
CASES = {
    "ga": dict(method="ga"),
    "ga_sgd": dict(method="ga", optimizer="sgd", lr=0.05),
    "graddiff": dict(method="graddiff"),
    "graddiff_kl_accum": dict(method="graddiff", hparams={"retain": "kl"}, grad_accum=2),
    "npo": dict(method="npo"),
    "npo_rt": dict(method="npo", hparams={"retain": "nll"}),
    "simnpo": dict(method="simnpo", hparams={"forget_weight": 1.0}),
    "tnpo": dict(method="tnpo", hparams={"beta": 0.1}),
    "wtnpo": dict(method="wtnpo", hparams={"beta": 0.1, "alpha": 1.0}),
    "wga": dict(method="wga", hparams={"beta": 1.0}),
    "idkpo": dict(method="idkpo", hparams={"retain": "nll"}),
    "idkdpo": dict(method="idkdpo"),
    "ngdiff": dict(method="ngdiff", optimizer="sgd", hparams={"phi": 2}),
    "rmu": dict(method="rmu", hparams={"c": 2.0, "alpha": 10.0}),
    "sft": dict(method="sft"),
    "retain_nll": dict(method="retain_nll"),
    "retain_kl": dict(method="retain_kl", optimizer="sgd", lr=0.5),   # Adam would amplify
    # the rounding noise of the zero gradient at step 0 (policy = reference)
    "sga_k2": dict(method="sga", hparams={"k": 2}),
    "sga_k3_geffect": dict(method="sga", hparams={"k": 3, "r": -0.5}, geffect_every=2,
                           probe_forget=2, probe_retain=2),
}
PATH = Path(__file__).with_name("golden_records.json")
TRAIN_VARS = ("loss", "grad_norm", "lr", "nll_forget", "nll_retain")


def _floats(values) -> list:
    return [None if math.isnan(v) else float(v) for v in values]


def summarise(run: Path) -> dict:
    """The numbers of one run directory that the golden test compares."""
    from geffect.io import open_record
    from unlearning.checkpoint import checkpoints
    from unlearning.models import load_model

    train = open_record(run / "train.nc")
    out = {v: _floats(train[v].values) for v in TRAIN_VARS}
    out["loss_term"] = {str(t): _floats(train.loss_term.sel(term=t).values) for t in train.term.values}
    model = load_model(str(checkpoints(run / "checkpoints")[-1]), dtype=torch.float64)[0]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])     # (P,)
    out["param_sum"], out["param_sq"] = float(flat.sum()), float((flat ** 2).sum())
    if (run / "geffect.nc").exists():
        ds = xr.open_dataset(run / "geffect.nc").load()
        if "sample_weight" in ds:                 # the contribution, as recorded before issue 11
            ds["geffect_pointwise"] = ds.geffect_pointwise * ds.sample_weight
            ds = ds.drop_vars("sample_weight")
        out["geffect"] = {v: _floats(ds[v].fillna(0).sum([d for d in ds[v].dims if d != "step"]).values)
                          for v in sorted(ds.data_vars) if "step" in ds[v].dims and ds[v].dtype.kind == "f"}
    return out


def run_case(name: str, tmp: Path, **extra) -> dict:
    from unlearning.config import RunConfig
    from unlearning.engine import run

    cfg = RunConfig(**{**BASE, **CASES[name], **extra, "out": str(tmp / name)})
    return summarise(run(cfg, progress=False))


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help=f"write {PATH.name}")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = {name: run_case(name, Path(tmp)) for name in CASES}
    text = json.dumps(data, indent=1, sort_keys=True)
    if args.write:
        PATH.write_text(text + "\n")
    print(f"{len(data)} cases" + (f" written to {PATH}" if args.write else ""))


if __name__ == "__main__":
    main()
