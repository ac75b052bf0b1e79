"""Every registered unlearning method on a real model: a few steps each through the engine.

Each method runs `--steps` AdamW steps on the first forget01 records (SGA with K-1
nearest retain samples, regularised methods with retain99) and G-effects every step, the
same path `geffect unlearn` takes. Printed per method: seconds per step (the run's wall time
over its steps: loading, G-effects and the final checkpoint included),
whether a reference model was built, the objective at the first and last step, and the
probe-set forget / retain NLL before the first and the last update (from the G-effect record;
fixed probe instances, so steps are comparable).

    python bench/methods_bench.py                           # smollm2-135m, 3 steps each
    python bench/methods_bench.py --model tiny-llama --steps 2
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from geffect.io import open_record
from unlearning.config import RunConfig
from unlearning.engine import run
from unlearning.objectives import REGISTRY

NOT_METHODS = ("sft", "retain_nll", "retain_kl")      # fine-tuning and regulariser parts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", default=None, help="comma-separated; default: all")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args(argv)
    methods = (args.methods.split(",") if args.methods else
               sorted(m for m in REGISTRY if m not in NOT_METHODS and not m.startswith("_")))
    if args.model.startswith("tiny"):
        args.max_length *= 4                            # byte tokenizer
    print(f"# {args.model}: {args.steps} steps, batch {args.batch_size}, lr {args.lr}, "
          f"probes {args.probes}+{args.probes}, max_length {args.max_length}\n")
    print("| method | s/step | ref model | loss first → last | probe forget NLL | "
          "probe retain NLL |\n|---|---:|:-:|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            cfg = RunConfig(method=m, hparams={"k": 3} if m == "sga" else {}, model=args.model,
                            forget_split="forget01", retain_split="retain99[:64]",
                            steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            max_length=args.max_length, geffect_every=1,
                            probe_forget=args.probes, probe_retain=args.probes,
                            out=str(Path(tmp) / m))
            t0 = time.perf_counter()
            try:
                out = run(cfg, progress=False)
            except Exception as err:                    # report and go on to the next method
                print(f"| {m} | failed: {type(err).__name__}: {str(err)[:80]} | | | | |")
                continue
            per_step = (time.perf_counter() - t0) / args.steps
            train, ge = open_record(out / "train.nc"), open_record(out / "geffect.nc")
            risk = ge.risk.groupby(ge.split).mean("instance")
            f = risk.sel(split="forget").values
            r = risk.sel(split="retain").values
            needs_ref = REGISTRY[m]().needs_ref
            loss = train.loss.values
            print(f"| {m} | {per_step:.1f} | {'yes' if needs_ref else 'no'} | "
                  f"{loss[0]:.4f} → {loss[-1]:.4f} | {f[0]:.4f} → {f[-1]:.4f} | "
                  f"{r[0]:.4f} → {r[-1]:.4f} |")


if __name__ == "__main__":
    main()
