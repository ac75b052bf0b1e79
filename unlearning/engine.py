"""The unlearning loop: read it top to bottom.

Per step: forward each split the objective reads (and the reference model where it needs
one), compute the objective, backward (or let an objective that owns its update write the
direction), clip, optimizer step, schedule. Every step appends loss terms, gradient norm,
learning rate and forget/retain NLL to `train.nc` (NLLs from the step's own forwards; one
that needs an extra forward only every `monitor_every` steps, NaN between); every `geffect_every` steps the same
backward is measured by `geffect.Recorder` into `geffect.nc`; every `eval_every` steps the
evaluation summary goes to `eval.nc`, then checkpoints are saved, so a checkpoint at step s
means every record holds the steps before s.

A step is applied only if its loss and gradient are finite (and |loss| <= max_loss when
set); otherwise the run stops with `DivergedError` naming the step, the cause and the last
good checkpoint (the still-finite parameters are saved as it). SIGINT/SIGTERM stop after the
current step with a checkpoint (`Interrupted`); rerunning the same config continues
(`rundir.prepare` picks the checkpoint and cuts the records to agree with it).
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

import geffect
from geffect.io import append_record, open_record, write_record
from geffect.schema import make_attrs

from .checkpoint import (CheckpointError, checkpoint_step, checkpoints, load_state,
                         nonfinite_parameters, save_checkpoint)
from .config import RunConfig
from .integrations.report import Reporter
from .models import load_model
from .monitor import clipped_grad_norm, monitor_nlls, monitoring, step_nlls
from .objectives import OwnsUpdate, SplitOutputs, build
from .rundir import finished, prepare, run_lock, stop_on_signal
from .tasks import build_task


RISK = {"token": "token", "sequence": "mean"}    # the G-effect risk reduced like the loss


class DivergedError(RuntimeError):
    """A non-finite (or too large) loss or gradient; the update was not applied and the
    last good state is saved."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM: the run stopped after a step, with a checkpoint the records agree with."""


def split_outputs(model, batch: dict, hidden_layers=(), ref=None,
                  reduction: str = "token") -> SplitOutputs:
    """One forward (and one reference forward); logits shifted to align with labels.
    `reduction` is the run's `loss_reduction`, carried to the objective."""
    def forward(m):
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=bool(hidden_layers))
        hidden = {l: out.hidden_states[l] for l in hidden_layers}      # each (B, T, d)
        return out.logits, hidden                                      # (B, T, V)

    logits, hidden = forward(model)
    ref_logits, ref_hidden = None, {}
    if ref is not None:
        with torch.no_grad():
            ref_logits, ref_hidden = forward(ref)
    return SplitOutputs.shifted(logits, batch["labels"], ref_logits, hidden=hidden,
                                ref_hidden=ref_hidden, reduction=reduction)


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


OPTIMIZERS = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def make_optimizer(params, cfg: RunConfig, impl: str = "auto"):
    """AdamW or SGD in the fastest implementation the parameters allow.

    `impl="auto"` takes torch's fused kernel (one pass over each tensor; CUDA, CPU and the
    other devices torch lists) and falls back to foreach where the parameters' device or dtype
    has no fused kernel. Fused, foreach and single-tensor follow the same update rule:
    results equal the single-tensor reference within float tolerance (tested). `impl` may
    also name one of "fused", "foreach", "single" (the reference).
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}
    if impl not in (*flags, "auto"):
        raise ValueError(f"unknown optimizer impl {impl!r}; expected auto, {', '.join(flags)}")
    params = list(params)
    if impl == "auto":
        impl = "fused" if _fused_supported(params) else "foreach"
    return OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay, **flags[impl])


def _fused_supported(params) -> bool:
    """Whether torch has a fused optimizer kernel for every parameter (device type, float);
    the device list is torch's own (what its optimizers check at the first step)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    return all(p.device.type in devices and torch.is_floating_point(p) for p in params)


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


@dataclass
class Setup:
    """What the loop needs, built once by `setup` (fresh or from a checkpoint)."""

    cfg: RunConfig
    out: Path
    model: torch.nn.Module
    tok: object
    ref: torch.nn.Module | None
    objective: object
    params: list
    hidden_layers: tuple
    task: object
    opt: torch.optim.Optimizer
    sched: object
    probes: dict | None
    attrs: dict
    start: int


def setup(cfg: RunConfig, out: Path, ckpt: Path | None) -> Setup:
    """Models, objective, trainable parameters, task, optimizer and schedule at step `start`."""
    objective = build(cfg.method, **cfg.hparams)
    dtype = getattr(torch, cfg.dtype)
    state = load_state(ckpt) if ckpt else None      # weights_only: a crafted file is refused
    model, tok = load_model(str(ckpt) if ckpt else cfg.model, dtype=dtype, seed=cfg.seed)
    ref = load_model(cfg.ref_model or cfg.model, dtype=dtype, seed=cfg.seed)[0] if objective.needs_ref else None
    if hasattr(objective, "bind"):               # objectives sized by the model (RMU's layer)
        objective = objective.bind(model)
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
    if state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    attrs = make_attrs(config=cfg.to_json(), model=cfg.model, method=cfg.method, kind="train",
                       normal_strategy=task.normal_strategy)
    return Setup(cfg, out, model, tok, ref, objective, params,
                 tuple(getattr(objective, "hidden_layers", ())), task, opt, sched,
                 _probes(task, cfg) if cfg.geffect_every else None, attrs,
                 state["step"] if state else 0)


def run(cfg: RunConfig, *, progress: bool = True) -> Path:
    """Run (or resume) one unlearning job; returns the run directory.

    Rerunning into the same `out` continues from the newest checkpoint the records agree
    with; SIGINT/SIGTERM checkpoint at the end of the current step and raise `Interrupted`.
    """
    out = Path(cfg.out)
    if finished(out, cfg, open_record):                       # reads only: a read-only finished run is fine
        return out
    out.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(cfg.report_to, out) if cfg.report_to else None
    with run_lock(out), stop_on_signal() as stop, contextlib.ExitStack() as closing:
        if reporter:
            closing.callback(reporter.close)
        ckpt = prepare(out, cfg, open_record, write_record)
        cfg.save(out / "config.json")
        s = setup(cfg, out, ckpt)
        if cfg.eval_every and s.start % cfg.eval_every == 0 and not _has_eval(out, s.start):
            _evaluate(s, s.start)
        for step in tqdm(range(s.start, cfg.steps), desc=cfg.method, disable=not progress,
                         initial=s.start, total=cfg.steps):
            train, gds = train_step(s, step)
            append_record(train.assign_attrs(s.attrs), out / "train.nc", "train")
            if gds is not None:
                append_record(gds.assign_attrs(config=s.attrs["config"], model=cfg.model,
                                               method=cfg.method), out / "geffect.nc", "geffect")
            if reporter:
                reporter.log_step(step, train, gds)
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                _evaluate(s, step + 1)
            if stop or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
                ckpt = save_checkpoint(out / "checkpoints", step + 1, s.model, s.tok, s.opt, s.sched)
            if stop:
                raise Interrupted(f"interrupted by {stop[0]} after step {step}; checkpoint "
                                  f"{ckpt} and the records agree; rerun the same command to "
                                  f"continue")
        if not checkpoints(out / "checkpoints") or checkpoint_step(checkpoints(out / "checkpoints")[-1]) != cfg.steps:
            save_checkpoint(out / "checkpoints", cfg.steps, s.model, s.tok, s.opt, s.sched)
    return out


def train_step(s: Setup, step: int) -> tuple[xr.Dataset, xr.Dataset | None]:
    """One optimizer step: forward, objective, backward (measured every geffect_every), then
    the update only if the loss and the gradient are finite. Returns the step's records."""
    cfg, objective, model, params = s.cfg, s.objective, s.model, s.params
    s.opt.zero_grad(set_to_none=True)
    measure = cfg.geffect_every and step % cfg.geffect_every == 0
    micro = [s.task.batch(step * cfg.grad_accum + m, cfg.batch_size, objective.splits, cfg.seed)
             for m in range(cfg.grad_accum)]
    recorder = (geffect.Recorder(model, probes=s.probes, reduction=RISK[cfg.loss_reduction])
                if measure else contextlib.nullcontext())
    gds = None
    with recorder as rec:
        losses = []
        for batches in micro:
            outs = {sp: split_outputs(model, batches[sp], s.hidden_layers, s.ref, cfg.loss_reduction)
                    for sp in objective.splits}
            loss = objective(outs)
            _check_loss(s, step, loss)
            if not losses:
                seen = step_nlls(outs)              # micro-batch 0's own NLLs, no forward
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
    grad_norm = clipped_grad_norm(params, cfg.max_grad_norm)
    if not math.isfinite(grad_norm):
        _diverged(s, step, f"the gradient norm is {grad_norm} (loss {_num(loss.total):.6g} is finite)")
    lr = s.sched.get_last_lr()[0]
    if hasattr(objective, "learning_rate"):
        lr = objective.learning_rate(step, lr, lambda eta: _loss_at(model, params, objective, micro[0], s.hidden_layers, s.ref, eta, cfg.loss_reduction))
        for g in s.opt.param_groups:
            g["lr"] = lr
    nll_f, nll_r = monitor_nlls(model, s.task, cfg, step, loss, seen, monitoring(cfg, step, measure))
    s.opt.step()
    s.sched.step()
    bad = nonfinite_parameters(model)
    if bad:
        _diverged(s, step, f"the update (lr {lr:.3g}) made parameters {bad[:3]} non-finite",
                  applied=True)
    return train_step_record(step, loss, grad_norm, lr, nll_f, nll_r), gds


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


def _evaluate(s: Setup, step: int) -> None:
    from .evaluation import evaluate

    cfg = s.cfg
    was_training = s.model.training
    s.model.eval()
    ds = evaluate(s.model, s.tok, cfg.benchmark, forget_split=cfg.forget_split,
                  data_dir=cfg.data_dir, max_instances=cfg.eval_max_instances,
                  retain_truth_ratios=cfg.retain_truth_ratios, step=step, progress=False)
    s.model.train(was_training)
    save_eval(ds.assign_attrs(s.attrs), s.out / "eval.nc")


def _has_eval(out: Path, step: int) -> bool:
    path = out / "eval.nc"
    return path.exists() and step in open_record(path, "eval").step.values


def _check_loss(s: Setup, step: int, loss) -> None:
    total = _num(loss.total)
    if not math.isfinite(total):
        _diverged(s, step, f"the objective is {total} (terms "
                           f"{ {k: round(_num(v), 6) for k, v in loss.terms.items()} })")
    if s.cfg.max_loss is not None and abs(total) > s.cfg.max_loss:
        _diverged(s, step, f"|objective| = {abs(total):.6g} exceeds max_loss={s.cfg.max_loss}")


def _diverged(s: Setup, step: int, cause: str, applied: bool = False) -> None:
    """Stop with DivergedError naming the step, the cause and the last good checkpoint.

    Unless the update was already applied, the parameters are those after `step` steps, still
    finite: they become the checkpoint of step `step` (the records hold steps < step).
    """
    root = s.out / "checkpoints"
    if not applied:
        with contextlib.suppress(CheckpointError):
            save_checkpoint(root, step, s.model, s.tok, s.opt, s.sched)
    have = checkpoints(root)
    last = f"{have[-1]} (step {checkpoint_step(have[-1])})" if have else "none (no checkpoint saved)"
    what = "the update was applied" if applied else "the update was not applied"
    raise DivergedError(f"diverged at step {step}: {cause}; {what}; last good checkpoint: "
                        f"{last}; records: {s.out / 'train.nc'} up to step {step - 1}")
