"""Before / after table: evaluate a model on TOFU, unlearn with GA and SGA, evaluate again.

    python -m unlearning.evaluation.table --model smollm2-135m --forget-split forget01 \\
        --n-forget 20 --steps 10 --lr 2e-5 --max-instances 10 --out runs/eval_table

Each method is one engine run (`geffect unlearn` with the same flags); its final checkpoint is
evaluated with `evaluate(..., "tofu")`. Writes `<out>/table.md` (a Markdown table of the main
TOFU numbers) and `<out>/<row>.json` (each full summary). Give `--retain-truth-ratios` (a
file from `tofu_truth_ratios` or a retain model directory) to fill the forget-quality column.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from . import evaluate, summary_json

COLUMNS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_quality",
           "model_utility", "extraction_strength", "privleak")


def markdown(rows: dict[str, dict]) -> str:
    """A Markdown table: one line per evaluated model, the COLUMNS of its summary."""
    head = "| model | " + " | ".join(COLUMNS) + " | eval s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, s in rows.items():
        cells = ["n/a" if s.get(c) is None or (isinstance(s[c], float) and math.isnan(s[c]))
                 else f"{s[c]:.3f}" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s.get('seconds', 0):.0f} |")
    return "\n".join(lines)


def _evaluate(model, tok, args) -> dict:
    start = time.perf_counter()
    ds = evaluate(model, tok, "tofu", forget_split=args.forget_split,
                  max_instances=args.max_instances, batch_size=args.batch_size,
                  max_new_tokens=args.max_new_tokens,
                  retain_truth_ratios=args.retain_truth_ratios)
    return {**summary_json(ds), "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--forget-split", default="forget01")
    p.add_argument("--retain-split", default="retain99")
    p.add_argument("--methods", default="ga,sga")
    p.add_argument("--n-forget", type=int, default=20)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--train-batch-size", type=int, default=4)
    p.add_argument("--max-instances", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--retain-truth-ratios", default=None)
    p.add_argument("--out", default="runs/eval_table")
    args = p.parse_args(argv)

    from ..checkpoint import checkpoints
    from ..config import RunConfig
    from ..engine import run
    from ..models import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    model, tok = load_model(args.model)
    rows["before"] = _evaluate(model, tok, args)
    for method in args.methods.split(","):
        cfg = RunConfig(method=method, model=args.model, benchmark="tofu",
                        forget_split=args.forget_split, retain_split=args.retain_split,
                        n_forget=args.n_forget, steps=args.steps, lr=args.lr,
                        batch_size=args.train_batch_size, out=str(out / method))
        run_dir = run(cfg)
        model, tok = load_model(str(checkpoints(run_dir / "checkpoints")[-1]))
        rows[f"{method} ({args.steps} steps, lr {args.lr:g})"] = _evaluate(model, tok, args)
    for name, summary in rows.items():
        (out / f"{name.split()[0]}.json").write_text(json.dumps(summary, indent=1))
    table = markdown(rows)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
