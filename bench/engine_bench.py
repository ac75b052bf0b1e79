"""The engine against a hand-written loop, per step, in one process (issue 17).

For each method, a plain PyTorch loop (HF forward, the method's loss written out by hand,
backward, `AdamW.step`) and `geffect unlearn` (`unlearning.engine.run`) take `--steps` steps
on the same model, task and batches: TOFU forget01 (retain99 for GradDiff's retain term and
SGA's normal samples), batch 4 x 128 tokens, AdamW lr 1e-5, fp32, no G-effects, no
evaluation. NPO runs the reference model's forward in both; SGA has K = 2.

A step is timed from one optimizer step to the next (torch's global optimizer step hook), so
loading, the first step (the warm-up) and the final checkpoint are left out; the engine's
record append, gradient norm and data collation are in. Printed per method: the median
seconds per step of each (and the range), and engine / hand loop.

    python bench/engine_bench.py                               # smollm2-135m, 5 steps each
    python bench/engine_bench.py --model tiny-llama --steps 4  # a quick check of the script
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from unlearning.config import RunConfig
from unlearning.engine import run
from unlearning.models import load_model
from unlearning.objectives.sga import sga_weights
from unlearning.tasks import build_task

METHODS = {"ga": {}, "graddiff": {}, "npo": {"beta": 0.1}, "sga": {"k": 2, "r": 0.5}}


# ---- the hand-written loop ------------------------------------------------------------------

def token_nll(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) per-token NLL of the answer tokens (0 elsewhere) and the answer mask, as HF's
    causal-LM loss computes it (labels shifted, logits not)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, S, V)
    labels = F.pad(batch["labels"][:, 1:], (0, 1), value=-100)                                  # (B, S)
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")             # (B*S,)
    return nll.view(labels.shape), labels != -100


def hand_loss(method: str, hp: dict, model, ref, batches) -> torch.Tensor:
    """The method's loss, written out (GA and GradDiff with HF's own loss)."""
    def hf_loss(b):
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss

    if method == "ga":
        return -hf_loss(batches["forget"])
    if method == "graddiff":
        return -hf_loss(batches["forget"]) + hf_loss(batches["retain"])
    if method == "npo":
        nll, mask = token_nll(model, batches["forget"])
        with torch.no_grad():
            nll_ref, _ = token_nll(ref, batches["forget"])
        ratio = -(nll.sum(-1) - nll_ref.sum(-1))                                  # (B,)
        return (-(2 / hp["beta"]) * F.logsigmoid(-hp["beta"] * ratio)).mean()
    if method == "sga":
        w_f, w_n = sga_weights(hp["r"], hp["k"])
        ell = {}
        for split in ("forget", "normal"):
            nll, mask = token_nll(model, batches[split])
            ell[split] = nll.sum(-1) / mask.sum(-1)                               # (B,)
        return -(w_f * ell["forget"] + w_n * ell["normal"]).mean()                # K = 2
    raise ValueError(f"no hand loop for {method!r}; expected one of {sorted(METHODS)}")


def hand_loop(method: str, args, task, splits) -> None:
    hp = METHODS[method]
    model = load_model(args.model)[0].train()
    ref = load_model(args.model)[0] if method == "npo" else None
    kw = {"fused": True} if args.hand_optimizer == "fused" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, **kw)
    for step in range(args.steps):
        opt.zero_grad(set_to_none=True)
        hand_loss(method, hp, model, ref, task.batch(step, args.batch_size, splits)).backward()
        opt.step()


# ---- timing ---------------------------------------------------------------------------------

def step_times(fn) -> list[float]:
    """Seconds between consecutive optimizer steps while `fn()` runs (step 0 is the warm-up)."""
    marks: list[float] = []
    handle = register_optimizer_step_post_hook(lambda *_: marks.append(time.perf_counter()))
    try:
        fn()
    finally:
        handle.remove()
    return [b - a for a, b in pairwise(marks)]


def engine_config(method: str, args, out: Path) -> RunConfig:
    return RunConfig(method=method, hparams=METHODS[method], model=args.model,
                     forget_split="forget01", retain_split="retain99", steps=args.steps,
                     batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                     optimizer="adamw", dtype="float32", out=str(out))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    ap.add_argument("--steps", type=int, default=5, help="per run; the first is the warm-up")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--hand-optimizer", choices=["default", "fused"], default="default",
                    help="the hand loop's AdamW: torch's default implementation or fused")
    args = ap.parse_args(argv)
    if args.steps < 4:
        raise SystemExit(f"--steps must be >= 4 (a warm-up and >= 3 timed steps), got {args.steps}")
    if args.model.startswith("tiny"):
        args.max_length *= 4                            # byte tokenizer
    tok = load_model(args.model)[1]
    print(f"# {args.model}: batch {args.batch_size} x {args.max_length} tokens, AdamW lr {args.lr}, "
          f"fp32, {args.steps - 1} timed steps after a warm-up; {torch.get_num_threads()} threads; "
          f"hand loop AdamW {args.hand_optimizer}, engine monitor_every "
          f"{RunConfig().monitor_every}\n")
    print("| method | hand loop s/step | engine s/step | engine / hand |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            if method not in METHODS:
                raise SystemExit(f"unknown method {method!r}; expected some of {sorted(METHODS)}")
            cfg = engine_config(method, args, Path(tmp) / method)
            splits = {"ga": ("forget",), "graddiff": ("forget", "retain"), "npo": ("forget",),
                      "sga": ("forget", "normal")}[method]
            task = build_task(tok, "tofu", "forget01", "retain99", k=METHODS[method].get("k", 0),
                              max_length=args.max_length, seed=cfg.seed)
            hand = step_times(partial(hand_loop, method, args, task, splits))
            eng = step_times(partial(run, cfg, progress=False))
            h, e = statistics.median(hand), statistics.median(eng)
            print(f"| {method} | {h:.3f} ({_span(hand)}) | {e:.3f} ({_span(eng)}) | {e / h:.2f} |",
                  flush=True)


def _span(ts: list[float]) -> str:
    return f"{min(ts):.2f}–{max(ts):.2f}"


if __name__ == "__main__":
    main()
