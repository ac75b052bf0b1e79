"""Cost of exact per-instance, per-group G-effects next to a plain training step.

Every variant runs in its own process (so peak memory is its own), on the same real TOFU
batches: B training rows from forget10 and probe sets of P forget10 and P retain99 rows, GA
objective (minus the mean token NLL), AdamW. Per variant: one warm-up step, then `--repeat`
timed steps (median).

  (a) plain     a training step: forward, backward, optimizer step
  (f) floor     (a) + one plain forward+backward of the summed risk on each probe set: the
                least any exact G-effect needs (grad L and grad R_probe must both be formed)
  (b) hooks     (a) with `geffect.Recorder`: per-instance x per-group G-effects in both
                directions (probe instances vs grad L, objective rows vs grad R_probe) for
                both probe sets
  (c) loop      (a) + the obviously correct loop: one forward+backward per probe instance
                and per objective row (padding trimmed), contracted per group
  (d) vmap      (a) + torch.func per-instance gradients of the probe instances and the
                objective rows, in chunks of `--vmap-chunk`, contracted per group

    python bench/geffect_bench.py                       # tiny-llama and smollm2-135m
    python bench/geffect_bench.py --models tiny-llama --repeat 3

Peak memory is the process's max RSS on CPU (model, optimizer and data included, as a user
sees it) and `torch.cuda.max_memory_allocated` on a GPU.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = {"a": "plain step", "f": "floor: step + probe fwd/bwd", "b": "hooks (Recorder)",
            "c": "per-instance loop", "d": "torch.func vmap"}


# ---- one variant, in a child process ------------------------------------------------------------
def _batches(tok, b: int, p: int, max_length: int) -> tuple[dict, dict]:
    from unlearning.data import collate, encode, load_split

    forget, retain = load_split("tofu", "forget10"), load_split("tofu", "retain99")
    enc = lambda rows: collate([encode(tok, r, max_length) for r in rows], tok)  # noqa: E731
    return enc(forget[p:p + b]), {"forget": enc(forget[:p]), "retain": enc(retain[:p])}


def _trim(batch: dict, i: int) -> dict:
    """Row i alone, without its padding."""
    n = int(batch["attention_mask"][i].sum())
    return {k: batch[k][i:i + 1, :n] for k in ("input_ids", "attention_mask", "labels")}


def _child(model_name: str, variant: str, b: int, p: int, max_length: int, repeat: int,
           chunk: int, device: str) -> dict:
    import torch

    from geffect import Recorder, param_groups
    from geffect.functional import contract, risk_grads
    from geffect.reference import per_group
    from geffect.risk import row_risk
    from unlearning.models import TINY, load_model

    model, tok = load_model(model_name)
    model.to(device).train()
    if model_name in TINY:
        max_length *= 4                     # a byte tokenizer: ~4 bytes per subword token
    if variant == "d":
        model.set_attn_implementation("eager")  # SDPA's mask code calls .item(): no vmap
    train, probes = _batches(tok, b, p, max_length)
    move = lambda d: {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in d.items()}  # noqa: E731
    train, probes = move(train), {k: move(v) for k, v in probes.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    params = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    table = param_groups(model)

    def logits(batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def ga_loss(batch):
        return -row_risk(logits(batch), batch["labels"]).mean()

    def grads(scalar):
        gs = torch.autograd.grad(scalar, [q for _, q in params], allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(q)) for (n, q), g in zip(params, gs)}

    def plain_backward():
        opt.zero_grad(set_to_none=True)
        ga_loss(train).backward()
        return {n: q.grad.detach().clone() for n, q in params}

    def step_a():
        plain_backward()
        opt.step()

    def step_f():
        opt.zero_grad(set_to_none=True)
        ga_loss(train).backward()
        for batch in probes.values():
            grads(row_risk(logits(batch), batch["labels"]).sum())
        opt.step()

    def step_b():
        opt.zero_grad(set_to_none=True)
        with Recorder(model, probes, table=table) as rec:
            rec.backward(ga_loss(train), sample_ids=train["instance_id"])
            rec.measure(step=0)
        opt.step()

    def step_c():
        grad_l = plain_backward()
        grad_r = {}
        for name, batch in probes.items():
            acc = {n: torch.zeros_like(q) for n, q in params}
            for i in range(batch["input_ids"].shape[0]):
                one = _trim(batch, i)
                g = grads(row_risk(logits(one), one["labels"])[0])
                per_group(table, model, grad_l, g)                  # <grad L, grad R_i>
                for n in acc:
                    acc[n] += g[n] / batch["input_ids"].shape[0]
            grad_r[name] = acc
        for s in range(b):                                          # objective rows
            one = _trim(train, s)
            g = grads(-row_risk(logits(one), one["labels"])[0] / b)
            for d in grad_r.values():
                per_group(table, model, g, d)                       # <grad L(s), grad R_probe>
        opt.step()

    def step_d():
        grad_l = plain_backward()
        grad_r = {}

        def chunks(batch):
            n = batch["input_ids"].shape[0]
            for lo in range(0, n, chunk):
                yield {k: batch[k][lo:lo + chunk] for k in ("input_ids", "attention_mask", "labels")}

        for name, batch in probes.items():
            acc = {n: torch.zeros_like(q) for n, q in params}
            for part in chunks(batch):
                per_row = risk_grads(model, part)                   # name -> (c, *shape)
                contract(per_row, grad_l, table, model)
                for n in acc:
                    acc[n] += per_row[n].sum(0) / batch["input_ids"].shape[0]
                del per_row
            grad_r[name] = acc
        for part in chunks(train):                                  # GA rows: -grad R_s / B
            per_row = risk_grads(model, part)
            for d in grad_r.values():
                contract(per_row, d, table, model)
            del per_row
        opt.step()

    run = {"a": step_a, "f": step_f, "b": step_b, "c": step_c, "d": step_d}[variant]
    cuda = device.startswith("cuda")
    run()                                                           # warm-up
    times = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"time_s": sorted(times)[len(times) // 2], "peak_mb": peak,
            "tokens": int(train["attention_mask"].sum())}


# ---- the table ----------------------------------------------------------------------------------
def _measure(args, model: str, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--child", model, variant, "--batch", str(args.batch),
           "--probes", str(args.probes), "--max-length", str(args.max_length),
           "--repeat", str(args.repeat), "--vmap-chunk", str(args.vmap_chunk),
           "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny-llama,smollm2-135m")
    ap.add_argument("--variants", default="a,f,b,c,d")
    ap.add_argument("--batch", type=int, default=16, help="training rows B")
    ap.add_argument("--probes", type=int, default=16, help="instances P per probe set")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--vmap-chunk", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child, args.batch, args.probes, args.max_length,
                                args.repeat, args.vmap_chunk, args.device)))
        return
    import torch

    print(f"# geffect bench: B={args.batch}, P={args.probes} per probe set, max_length "
          f"{args.max_length}, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat}")
    for model in args.models.split(","):
        res = {v: _measure(args, model, v) for v in args.variants.split(",")}
        print(f"\n## {model}\n")
        print("| variant | time (s) | peak memory (MB) |\n|---|---:|---:|")
        for v, r in res.items():
            cells = (f"{r['time_s']:.3f} | {r['peak_mb']:.0f}" if "error" not in r
                     else f"failed: {r['error']} | -")
            print(f"| ({v}) {VARIANTS[v]} | {cells} |")
        ok = {v: r for v, r in res.items() if "error" not in r}

        def ratio(x, y, key="time_s"):
            return f"{ok[x][key] / ok[y][key]:.2f}" if x in ok and y in ok else "n/a"
        print(f"\n(b)/(f) time {ratio('b', 'f')} (target <= 1.5); (c)/(b) time "
              f"{ratio('c', 'b')} (target >= 1.5 on CPU); (d)/(b) time {ratio('d', 'b')}; "
              f"(b)/(a) time {ratio('b', 'a')}; peak memory (b)/(f) "
              f"{ratio('b', 'f', 'peak_mb')} (target <= 1.1); (d)/(f) {ratio('d', 'f', 'peak_mb')}")


if __name__ == "__main__":
    main()
