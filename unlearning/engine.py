"""The unlearning loop: read it top to bottom.

Per step: forward each split the objective reads (and the reference model where it needs
one), compute the objective, backward (or let an objective that owns its update write the
direction), clip, optimizer step, schedule. Every step appends loss terms, gradient norm,
learning rate and forget/retain NLL to `train.nc`; every `geffect_every` steps the same
backward is measured by `geffect.Recorder` into `geffect.nc`; every `eval_every` steps the
evaluation summary goes to `eval.nc`. A NaN/inf loss stops the run with `DivergedError`,
after saving the (still finite) parameters as the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

import geffect
from geffect.io import append_record, open_record, write_record
from geffect.schema import make_attrs

from .checkpoint import checkpoints, load_state, save_checkpoint
from .config import RunConfig
from .models import load_model
from .objectives import OwnsUpdate, SplitOutputs, build
from .tasks import build_task


RISK = {"token": "token", "sequence": "mean"}    # the G-effect risk reduced like the loss


class DivergedError(RuntimeError):
    """The objective became NaN or infinite; the last good state is saved."""


def split_outputs(model, batch: dict, hidden_layers=(), ref=None,
                  reduction: str = "token") -> SplitOutputs:
    """One forward (and one reference forward); logits shifted to align with labels.
    `reduction` is the run's `loss_reduction`, carried to the objective."""
    def forward(m):
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=bool(hidden_layers))
        hidden = {l: out.hidden_states[l] for l in hidden_layers}      # each (B, T, d)
        return out.logits[:, :-1], hidden                              # (B, T-1, V)

    logits, hidden = forward(model)
    ref_logits, ref_hidden = None, {}
    if ref is not None:
        with torch.no_grad():
            ref_logits, ref_hidden = forward(ref)
    return SplitOutputs(logits=logits, labels=batch["labels"][:, 1:], ref_logits=ref_logits,
                        hidden=hidden, ref_hidden=ref_hidden, reduction=reduction)


def sample_weights(objective, losses) -> list[float] | None:
    """Each forward row's weight in the step's loss (micro-batches averaged), in forward order;
    None when the objective gives no per-row decomposition for some split."""
    out: list[float] = []
    for loss in losses:
        if any(s not in loss.weights for s in objective.splits):
            return None
        out += [float(w) / len(losses) for s in objective.splits for w in loss.weights[s]]
    return out


def sample_ids(objective, batches: dict) -> list[str]:
    """The objective instance each forward row belongs to, in forward order (for G-effects).

    Rows of `normal` and `idk` belong to the forget row they were drawn for.
    """
    ids: list[str] = []
    forget = batches.get("forget", {}).get("instance_id", [])
    for split in objective.splits:
        rows = batches[split]["instance_id"]
        if split in ("normal", "idk") and forget:
            per = len(rows) // len(forget)
            rows = [forget[j // per] for j in range(len(rows))]
        ids += rows
    return ids


def make_schedule(optimizer, cfg: RunConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return {"constant": 1.0, "linear": 1.0 - frac,
                "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[cfg.schedule]

    if cfg.schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}; expected constant, linear or cosine")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(params, cfg: RunConfig):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adamw or sgd")


@torch.no_grad()
def mean_nll(model, batch: dict) -> float:
    return float(split_outputs(model, batch).nll.mean())


def _num(x) -> float:
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def train_step_record(step, loss, grad_norm, lr, nll_f, nll_r) -> xr.Dataset:
    terms = sorted(loss.terms)
    return xr.Dataset(
        {"loss": ("step", [_num(loss.total)]),
         "loss_term": (("step", "term"), [[_num(loss.terms[t]) for t in terms]]),
         "grad_norm": ("step", [grad_norm]), "lr": ("step", [lr]),
         "nll_forget": ("step", [nll_f]), "nll_retain": ("step", [nll_r])},
        coords={"step": [step], "term": np.array(terms, dtype=str)})


def run(cfg: RunConfig, *, progress: bool = True) -> Path:
    """Run (or resume) one unlearning job; returns the run directory."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    objective = build(cfg.method, **cfg.hparams)
    _check_resumable(out, cfg)
    cfg.save(out / "config.json")
    dtype = getattr(torch, cfg.dtype)
    done = checkpoints(out / "checkpoints")
    start = load_state(done[-1])["step"] if done else 0
    model, tok = load_model(str(done[-1]) if done else cfg.model, dtype=dtype, seed=cfg.seed)
    ref = load_model(cfg.ref_model or cfg.model, dtype=dtype, seed=cfg.seed)[0] if objective.needs_ref else None
    if hasattr(objective, "bind"):               # objectives sized by the model (RMU's layer)
        objective = objective.bind(model)
    hidden_layers = tuple(getattr(objective, "hidden_layers", ()))
    trainable = getattr(objective, "trainable", None)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trainable is None or re.search(trainable, name) is not None)
        params += [p] if p.requires_grad else []
    if not params:
        raise ValueError(f"no parameter name matches trainable={trainable!r}")
    model.train()  # dropout is off in every config we build; train() only marks intent
    task = build_task(tok, cfg.benchmark, cfg.forget_split, cfg.retain_split,
                      n_forget=cfg.n_forget, n_retain=cfg.n_retain,
                      k=getattr(objective, "k", 0) if "normal" in objective.splits else 0,
                      normal_strategy=cfg.normal_strategy, max_length=cfg.max_length,
                      seed=cfg.seed, data_dir=cfg.data_dir)
    opt = make_optimizer(params, cfg)
    sched = make_schedule(opt, cfg)
    if done:
        state = load_state(done[-1])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    for name in ("train", "geffect", "eval"):
        _truncate(out / f"{name}.nc", start, name)
    probes = _probes(task, cfg) if cfg.geffect_every else None
    attrs = make_attrs(config=cfg.to_json(), model=cfg.model, method=cfg.method, kind="train",
                       normal_strategy=task.normal_strategy)
    if cfg.eval_every and start == 0:
        _evaluate(model, tok, cfg, out, 0, attrs)

    steps = range(start, cfg.steps)
    for step in tqdm(steps, desc=f"{cfg.method}", disable=not progress, initial=start, total=cfg.steps):
        opt.zero_grad(set_to_none=True)
        measure = cfg.geffect_every and step % cfg.geffect_every == 0
        micro = [task.batch(step * cfg.grad_accum + m, cfg.batch_size, objective.splits, cfg.seed)
                 for m in range(cfg.grad_accum)]
        recorder = (geffect.Recorder(model, probes=probes, reduction=RISK[cfg.loss_reduction])
                    if measure else contextlib.nullcontext())
        with recorder as rec:
            losses = []
            for batches in micro:
                outs = {s: split_outputs(model, batches[s], hidden_layers, ref, cfg.loss_reduction)
                        for s in objective.splits}
                loss = objective(outs)
                if not torch.isfinite(loss.total):
                    _diverged(out, step, model, tok, opt, sched, loss)
                losses.append(loss)
                if not measure:
                    _backward(objective, loss, params, cfg.grad_accum)
            if measure:
                total = _mean_loss(losses)
                if isinstance(objective, OwnsUpdate):
                    objective.backward(total, params)
                    rec.backward(None)
                else:
                    rec.backward(total.total, sample_ids=[i for b in micro for i in sample_ids(objective, b)],
                                 weights=sample_weights(objective, losses))
                div = ({"forget": micro[0]["forget"], "normal": micro[0]["normal"]}
                       if "normal" in objective.splits else None)
                sga = ({"k": objective.k, "convention": objective.convention,
                        "loss_reduction": cfg.loss_reduction} if div else None)
                gds = rec.measure(step=step, divergence=div, sga=sga)
        loss = _mean_loss(losses)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf")))
        lr = sched.get_last_lr()[0]
        if hasattr(objective, "learning_rate"):
            lr = objective.learning_rate(step, lr, lambda eta: _loss_at(model, params, objective, micro[0], hidden_layers, ref, eta, cfg.loss_reduction))
            for g in opt.param_groups:
                g["lr"] = lr
        nll_f = (_num(loss.terms["forget_nll"]) if "forget_nll" in loss.terms
                 else mean_nll(model, micro[0]["forget"]) if "forget" in micro[0] else np.nan)
        nll_r = mean_nll(model, micro[0]["retain"] if "retain" in micro[0] else task.batch(step, cfg.batch_size, ("retain",), cfg.seed)["retain"])
        opt.step()
        sched.step()
        append_record(train_step_record(step, loss, grad_norm, lr, nll_f, nll_r).assign_attrs(attrs),
                      out / "train.nc", "train")
        if measure:
            append_record(gds.assign_attrs(config=attrs["config"], model=cfg.model,
                                           method=cfg.method), out / "geffect.nc", "geffect")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(out / "checkpoints", step + 1, model, tok, opt, sched)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            _evaluate(model, tok, cfg, out, step + 1, attrs)
    last = checkpoints(out / "checkpoints")
    if not last or load_state(last[-1])["step"] != cfg.steps:
        save_checkpoint(out / "checkpoints", cfg.steps, model, tok, opt, sched)
    return out


# ---- the plumbing the loop calls ---------------------------------------------------------

def _mean_loss(losses):
    """Average of micro-batch losses (grad accumulation), terms and parts alike."""
    from .objectives import Loss

    n = len(losses)
    if n == 1:
        return losses[0]
    avg = lambda key: {k: sum(getattr(l, key)[k] for l in losses) / n for k in getattr(losses[0], key)}
    return Loss(total=sum(l.total for l in losses) / n, terms=avg("terms"), parts=avg("parts"))


def _backward(objective, loss, params, accum: int) -> None:
    if isinstance(objective, OwnsUpdate):
        if accum != 1:
            raise ValueError(f"{objective.name} owns its update; use grad_accum=1 (got {accum})")
        objective.backward(loss, params)
    else:
        (loss.total / accum).backward()


@torch.no_grad()
def _loss_at(model, params, objective, batches, hidden_layers, ref, eta: float,
             reduction: str = "token") -> float:
    """The objective's loss after theta <- theta - eta * grad; parameters restored after."""
    saved = [p.detach().clone() for p in params]
    try:
        for p in params:
            if p.grad is not None:
                p.sub_(eta * p.grad)
        outs = {s: split_outputs(model, batches[s], hidden_layers, ref, reduction)
                for s in objective.splits}
        return float(objective(outs).total)
    finally:
        for p, s in zip(params, saved):
            p.copy_(s)


def _probes(task, cfg: RunConfig) -> dict:
    """Fixed probe sets for G-effects: the first P forget and retain records."""
    return {"forget": task.encode(task.forget[:cfg.probe_forget]),
            "retain": task.encode(task.retain[:cfg.probe_retain])}


def save_eval(ds, path: Path, *, append: bool = True) -> Path:
    """Write an evaluation record (schema kind "eval") atomically; append along step or replace."""
    if not append:
        return write_record(ds, path, kind="eval")
    return append_record(ds, path, kind="eval")


def _evaluate(model, tok, cfg: RunConfig, out: Path, step: int, attrs: dict) -> None:
    from .evaluation import evaluate

    was_training = model.training
    model.eval()
    ds = evaluate(model, tok, cfg.benchmark, forget_split=cfg.forget_split, data_dir=cfg.data_dir,
                  max_instances=cfg.eval_max_instances, retain_truth_ratios=cfg.retain_truth_ratios,
                  step=step, progress=False)
    model.train(was_training)
    save_eval(ds.assign_attrs(attrs), out / "eval.nc")


def _diverged(out: Path, step, model, tok, opt, sched, loss) -> None:
    """Save the still-finite parameters (state after `step` steps) and stop with a clear error."""
    ckpt = save_checkpoint(out / "checkpoints", step, model, tok, opt, sched)
    terms = {k: _num(v) for k, v in loss.terms.items()}
    raise DivergedError(f"objective is {_num(loss.total)} at step {step} (terms {terms}); the "
                        f"last good parameters are saved in {ckpt}, the training record up to "
                        f"step {step - 1} in {out / 'train.nc'}")


def _truncate(path: Path, start: int, kind: str) -> None:
    """Drop record steps >= start (a resumed run recomputes them); a fresh run starts clean."""
    if not path.exists():
        return
    if start == 0:
        path.unlink()
        return
    ds = open_record(path, kind)
    if int(ds.step.max()) >= start:
        write_record(ds.sel(step=ds.step < start), path, kind)


def _check_resumable(out: Path, cfg: RunConfig) -> None:
    """Resuming is only allowed with the same config (the number of steps may grow)."""
    old_path = out / "config.json"
    if not old_path.exists() or not checkpoints(out / "checkpoints"):
        return
    old = RunConfig.from_json(old_path.read_text())
    diff = {k: (v, getattr(cfg, k)) for k, v in vars(old).items()
            if k not in ("steps", "eval_every") and v != getattr(cfg, k)}
    if diff:
        raise ValueError(f"{out} holds a run with another config {diff} (old, new); choose "
                         f"another --out or delete that directory")
