"""The end-to-end demo behind `make demo`: the whole story on SmolLM2-135M, offline.

1. fine-tune SmolLM2 on a small TOFU subset (the target) and on its retain part (the retain
   model), cached in .cache/ after the first run;
2. evaluate the target (TOFU metrics) and the retain model (truth ratios, for forget quality);
3. unlearn the forget set with GA, SGA and NPO, measuring G-effects every step;
4. evaluate each unlearned model and print forget/retain NLL and TOFU metrics before/after;
5. write the figures to demo_out/figures/ (PNG and PDF, with a captioned gallery figures.md)
   and execute the notebooks on the runs into demo_out/notebooks/.

`python -m unlearning.demo --preset gpu` is the same story at full TOFU size (forget05 on a
model fine-tuned on all 4,000 QA pairs) for a machine with a GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

PRESETS = {
    # ~15 minutes on a 2-core CPU (first run, fine-tuning included)
    # 8 unlearning steps, G-effects every 2nd (the engine's speed-ups pay for the 4 extra)
    "cpu": dict(model="smollm2-135m", forget_split="forget01", n_retain=16, ft_epochs=2,
                ft_batch=8, ft_lr=1e-4, steps=8, geffect_every=2, batch_size=4, lr=5e-5, k=2,
                eval_max=6, gen_tokens=24, probes=4, max_length=128, methods=("ga", "sga", "npo")),
    # the same story on a random tiny model in seconds (tests; numbers mean nothing)
    "tiny": dict(model="tiny-llama", forget_split="forget01", n_retain=4, ft_epochs=1,
                 ft_batch=8, ft_lr=1e-3, steps=2, geffect_every=1, batch_size=2, lr=1e-3, k=3, eval_max=2,
                 gen_tokens=4, probes=2, max_length=256, methods=("ga", "sga", "npo")),
    # the TOFU protocol at full size, for a GPU
    "gpu": dict(model="smollm2-135m", forget_split="forget05", n_retain=3800, ft_epochs=5,
                ft_batch=32, ft_lr=1e-5, steps=125, geffect_every=5, batch_size=32, lr=1e-5, k=4, eval_max=None,
                gen_tokens=200, probes=32, max_length=256, methods=("ga", "sga", "npo", "graddiff", "wga", "tnpo")),
}
HPARAMS = {"sga": {"r": 0.5, "convention": "gls"}, "npo": {"beta": 0.1}}


def _nll(model, tok, records: list[dict], max_length: int) -> float:
    """Mean token NLL over records (batches of 8)."""
    from .data import collate, encode
    from .engine import mean_nll

    rows = [encode(tok, r, max_length) for r in records]
    vals = [mean_nll(model, collate(rows[i:i + 8], tok)) * len(rows[i:i + 8])
            for i in range(0, len(rows), 8)]
    return sum(vals) / len(rows)


def _table(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from .config import RunConfig
    from .data import load_split
    from .engine import run, save_eval
    from .evaluation import evaluate, summary_json, tofu_truth_ratios
    from .finetune import finetune
    from .models import cache_dir, load_model
    from .tasks import load_spec
    from .checkpoint import checkpoints

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--methods", default=None, help="comma-separated, default: the preset's")
    args = ap.parse_args(argv)
    p = dict(PRESETS[args.preset])
    methods = args.methods.split(",") if args.methods else list(p["methods"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clock = lambda: f"[{time.perf_counter() - t0:6.0f} s]"

    print(f"{clock()} 1. fine-tuning {p['model']} on TOFU retain99[:{p['n_retain']}] + "
          f"{p['forget_split']} (target) and on the retain part alone (retain model)")
    made = finetune(p["model"], cache_dir() / f"demo-{args.preset}", forget_split=p["forget_split"],
                    n_retain=p["n_retain"], epochs=p["ft_epochs"], lr=p["ft_lr"],
                    batch_size=p["ft_batch"], max_length=p["max_length"])
    target = str(made["target"])
    tr_path = made["retain"].parent / f"retain_truth_ratios_{p['eval_max']}.npy"
    if not tr_path.exists():
        print(f"{clock()} 2. truth ratios of the retain model (for forget quality)")
        rmodel, rtok = load_model(str(made["retain"]))
        np.save(tr_path, tofu_truth_ratios(rmodel, rtok, forget_split=p["forget_split"],
                                           max_instances=p["eval_max"]))
        del rmodel

    forget = load_split("tofu", p["forget_split"])
    retain_spec = f"retain99[:{p['n_retain']}]"
    retain = load_spec("tofu", retain_spec)
    eval_kw = dict(forget_split=p["forget_split"], max_instances=p["eval_max"],
                   retain_truth_ratios=str(tr_path), max_new_tokens=p["gen_tokens"], progress=False)
    print(f"{clock()} 3. evaluating the target before unlearning")
    model, tok = load_model(target)
    before = evaluate(model, tok, "tofu", step=0, **eval_kw)
    nll0 = (_nll(model, tok, forget, p["max_length"]), _nll(model, tok, retain, p["max_length"]))
    rows = [{"model": "target (before)", "forget NLL": nll0[0], "retain NLL": nll0[1],
             **_summary(before)}]
    run_dirs = []
    for method in methods:
        print(f"{clock()} 4. unlearning with {method}: {p['steps']} steps, G-effects every "
              f"{p['geffect_every']}")
        cfg = RunConfig(method=method, hparams={**HPARAMS.get(method, {}),
                                                **({"k": p["k"]} if method == "sga" else {})},
                        model=target, forget_split=p["forget_split"], retain_split=retain_spec,
                        steps=p["steps"], batch_size=p["batch_size"], lr=p["lr"],
                        max_length=p["max_length"], geffect_every=p["geffect_every"], probe_forget=p["probes"],
                        probe_retain=p["probes"], out=str(out / "runs" / method))
        run_dir = run(cfg, progress=True)
        run_dirs.append(run_dir)
        model, tok = load_model(str(checkpoints(run_dir / "checkpoints")[-1]))
        after = evaluate(model, tok, "tofu", step=p["steps"], **eval_kw)
        save_eval(before, run_dir / "eval.nc", append=False)
        save_eval(after, run_dir / "eval.nc")
        rows.append({"model": f"{method} (after)", "forget NLL": _nll(model, tok, forget, p["max_length"]),
                     "retain NLL": _nll(model, tok, retain, p["max_length"]), **_summary(after)})

    print(f"{clock()} 5. figures")
    from analysis.figures import write_figures

    figures = write_figures(run_dirs, out / "figures")
    from analysis.notebooks import main as notebooks

    notebooks(["--runs", *map(str, run_dirs), "--out", str(out / "notebooks")])
    table = _table(rows)
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print("\n" + table)
    print(f"\n{clock()} done: runs in {out / 'runs'}, figures in {out / 'figures'} "
          f"({len(figures)} files), notebooks in {out / 'notebooks'}, table in {out / 'summary.md'}")


def _summary(ds) -> dict:
    from .evaluation import summary_json

    s = summary_json(ds)
    keys = {"forget_Q_A_Prob": "forget prob", "forget_Q_A_ROUGE": "forget ROUGE-L",
            "forget_truth_ratio": "forget TR", "forget_quality": "forget quality",
            "model_utility": "model utility"}
    return {v: (float("nan") if s.get(k) is None else s[k]) for k, v in keys.items()}


if __name__ == "__main__":
    main()
