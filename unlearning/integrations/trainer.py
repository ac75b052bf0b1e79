"""G-effects inside any `transformers.Trainer` that defines `compute_loss`: one mixin.

    class GradAscentG(GEffectsMixin, GradAscent):   # GradAscent: your Trainer subclass
        pass

    trainer = GradAscentG(model=..., args=..., train_dataset=...,
                          geffect_probes={"forget": batch_f, "retain": batch_r}, geffect_every=5)

Every `geffect_every` optimizer steps, the step's backward is measured by `geffect.Recorder`
(exact per-group, per-instance G-effects, Wang et al., ICLR 2025, Definition 1) and the step
is appended to `<output_dir>/geffect.nc`, the same record `geffect unlearn` writes; its scalar
summaries (`unlearning.integrations.report.scalars`) go to `Trainer.log`, so to every tracker
in `args.report_to`.

How: a `TrainerCallback` cannot see the backward, so the mixin wraps `training_step`. On a
measured step the Recorder's hooks are open from the first micro-batch's forward to the last;
the Trainer's own `accelerator.backward(loss)` calls are intercepted, so each micro-batch's loss
is exactly what the Trainer would backpropagate (its grad-accumulation and `num_items_in_batch`
scaling included), and the step's single backward is `rec.backward(sum of those losses)`; the
gradient left in `.grad` is the one the Trainer's own step would have left. Then the probes
are measured, before clipping and the optimizer step (as the engine does).

Point-wise G-effects need to know which rows are which: override `geffect_sample_ids(inputs)`
to return one id per row of each model forward `compute_loss` makes, in call order (rows that
share an id form one objective instance). Without it every row is its own instance. To record
the paper's PG-effect <grad L_s, grad R> (as `geffect unlearn` does) rather than each row's
contribution <grad L(s), grad R>, override `geffect_sample_weights(inputs)` to return each
row's weight w_s in the loss `compute_loss` returned (loss = sum_s w_s L_s; `Loss.weights`
for a registered objective); the mixin scales them by what the Trainer does to that loss
before its backward (grad accumulation). `geffect_reduction` is the probe risk's reduction
("token": HF's `outputs.loss`, the default, as `geffect unlearn` with loss_reduction "token";
"mean" for loss_reduction "sequence"). For the GA-vs-SGA divergence (SGA runs) override
`geffect_divergence(inputs)`.

Under DDP `.grad` is the averaged global gradient, so the record is the global step's (the
point-wise rows, their weights and the divergence batches are gathered over ranks; see
`_across_ranks`). Not supported (an error says so): fp16 loss scaling, DeepSpeed, FSDP,
Megatron-LM, XLA, `torch.nn.DataParallel`, LOMO and gradient checkpointing (its recomputed
forwards would be captured twice).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import geffect
import geffect.schema
from geffect.io import append_record, open_record, write_record

from .report import scalars


class GEffectsMixin:
    """Mix in before a `transformers.Trainer` subclass (see the module docstring).

    Keyword args (the Trainer's own arguments pass through):
        geffect_probes: probe name ("forget", "retain") -> fixed batch dict with `input_ids`,
            `attention_mask`, `labels` (HF-style, unshifted) and `instance_id`.
        geffect_every: measure every this many optimizer steps (steps 0, N, 2N, ...).
        geffect_out: the record's path (default `<args.output_dir>/geffect.nc`).
        geffect_attrs: provenance attrs for the record (`config`, `model`, `method`).
        geffect_report: send the scalar summaries to `self.log` (the Trainer's trackers).
        geffect_probe_chunk: rows per probe forward/backward (`geffect.Recorder`).
        geffect_reduction: the probe risk's reduction, "token" (HF's `outputs.loss`), "mean"
            or "sum" (`geffect.Recorder`'s `reduction`).
    """

    def __init__(self, *args, geffect_probes: Mapping[str, Mapping], geffect_every: int = 1,
                 geffect_out: str | Path | None = None, geffect_attrs: Mapping | None = None,
                 geffect_report: bool = True, geffect_probe_chunk: int | None = 4,
                 geffect_reduction: str = "token", **kwargs):
        super().__init__(*args, **kwargs)
        if int(geffect_every) < 1:
            raise ValueError(f"geffect_every: expected a positive number of steps, got {geffect_every}")
        self.geffect_probes, self.geffect_every = dict(geffect_probes), int(geffect_every)
        self.geffect_out = Path(geffect_out or Path(self.args.output_dir) / "geffect.nc")
        self.geffect_report, self.geffect_probe_chunk = geffect_report, geffect_probe_chunk
        if geffect_reduction not in geffect.schema.REDUCTIONS:
            raise ValueError(f"geffect_reduction: expected one of {geffect.schema.REDUCTIONS}, "
                             f"got {geffect_reduction!r}")
        self.geffect_reduction = geffect_reduction
        self.geffect_attrs = dict(geffect_attrs or {})
        self.geffect_attrs.setdefault("config", self.args.to_json_string())
        self.geffect_attrs.setdefault("method", type(self).__name__)
        self.geffect_attrs.setdefault("model", getattr(getattr(self.model, "config", None),
                                                       "name_or_path", "") or type(self.model).__name__)
        self._ge = None                          # the open measurement: dict, or None

    # ---- what a trainer may say about its inputs --------------------------------------------
    def geffect_sample_ids(self, inputs) -> list[str] | None:
        """One objective-instance id per row of each forward `compute_loss` makes on `inputs`,
        in call order; None: every row is its own instance."""
        return None

    def geffect_sample_weights(self, inputs) -> list[float] | None:
        """One weight per row, in the order of `geffect_sample_ids`: the row's weight w_s in
        the loss `compute_loss` returned for `inputs` relative to its instance's own objective
        (loss = sum_s w_s L_s; rows of one instance share it). Called after `compute_loss`
        ran on `inputs`. None: the point-wise G-effects are the rows' contributions."""
        return None

    def geffect_divergence(self, inputs) -> Mapping | None:
        """{"forget": batch, "normal": batch} (and optionally "sga": an object or dict with
        `k`, `convention`, `loss_reduction`) to record the GA-vs-SGA divergence; None to
        skip. Called with the step's first micro-batch."""
        return None

    # ---- the measured step ----------------------------------------------------------------
    def training_step(self, model, inputs, *args, **kwargs):
        step = self.state.global_step
        if self._ge is None and step % self.geffect_every != 0:
            return super().training_step(model, inputs, *args, **kwargs)
        if self._ge is None:
            self._open(step, inputs)
        ge = self._ge
        ids = self.geffect_sample_ids(inputs)
        ge["ids"].append(None if ids is None else [str(i) for i in ids])
        try:
            computed = []
            own = "compute_loss" in vars(self)
            compute_loss = self.compute_loss
            self.compute_loss = _kept(compute_loss, computed)     # the value compute_loss returns
            self.accelerator.backward = _stash(ge["losses"])      # keep the loss, no backward
            try:
                out = super().training_step(model, inputs, *args, **kwargs)
            finally:
                del self.accelerator.backward
                if own:
                    self.compute_loss = compute_loss
                else:
                    del self.compute_loss
            w = self.geffect_sample_weights(inputs)
            if w is not None:
                scale = self._loss_scale(computed, ge["losses"][-1])
                w = [float(x) * scale for x in w]
            ge["weights"].append(w)
            if len(ge["losses"]) == self._micro_batches():
                self._close_and_measure()
        except BaseException:
            self._abort()
            raise
        return out

    def _loss_scale(self, computed: list, backpropagated) -> float:
        """The factor between the loss `compute_loss` returned and the step's total (the
        Trainer's grad-accumulation division, then the accelerator's)."""
        if len(computed) != 1:
            raise NotImplementedError(f"G-effects under the Trainer: compute_loss ran "
                                      f"{len(computed)} times in one training_step; expected once")
        n = self._micro_batches()
        c, b = float(computed[0].detach()), float(backpropagated.detach())
        if c != 0 and math.isfinite(c):
            ratio = b / c
            found = [f for f in (1.0 / n, 1.0) if abs(ratio / f - 1) < 1e-3]
            if not found:
                raise NotImplementedError(f"G-effects under the Trainer: the Trainer scaled "
                                          f"compute_loss's value by {ratio:.6g} before its "
                                          f"backward; expected 1 or 1/{n} (grad accumulation)")
            factor = found[0]
        else:                                    # no ratio to read: the Trainer's own rule
            factor = 1.0 if getattr(self, "loss_is_scaled_for_ga", False) else 1.0 / n
        return factor / self.accelerator.gradient_accumulation_steps

    def _micro_batches(self) -> int:
        return int(getattr(self, "current_gradient_accumulation_steps", None)
                   or self.args.gradient_accumulation_steps)

    def _open(self, step: int, inputs) -> None:
        acc = self.accelerator
        kind = str(getattr(acc.distributed_type, "value", acc.distributed_type))
        found = [what for what, bad in (
            (f"distributed type {kind}", not (kind == "NO" or kind.startswith("MULTI_"))),
            ("fp16 loss scaling", acc.scaler is not None),
            ("torch.nn.DataParallel (n_gpu > 1 in one process)", self.args.n_gpu > 1 and acc.num_processes == 1),
            ("gradient checkpointing", bool(self.args.gradient_checkpointing)
             or _checkpointing(self.model))) if bad]
        if found:
            raise NotImplementedError(f"G-effects under the Trainer support one process or DDP, "
                                      f"fp32/bf16, no activation recomputation; found {found}")
        device = self.args.device
        probes = {p: _to(b, device) for p, b in self.geffect_probes.items()}
        rec = geffect.Recorder(self.model, probes=probes, reduction=self.geffect_reduction,
                               attrs=self.geffect_attrs, probe_chunk=self.geffect_probe_chunk)
        div = self.geffect_divergence(inputs)
        if div is not None:
            div = {k: (v if k == "sga" else _to(_gathered(v, acc.num_processes), device))
                   for k, v in div.items()}
        self._ge = {"step": step, "rec": rec.__enter__(), "losses": [], "ids": [], "weights": [],
                    "div": div}

    def _abort(self) -> None:
        if self._ge is not None:
            self._ge["rec"].__exit__(None, None, None)
            self._ge = None

    def _close_and_measure(self) -> None:
        ge, self._ge = self._ge, None
        rec = ge["rec"]
        try:
            total = sum(loss / self.accelerator.gradient_accumulation_steps for loss in ge["losses"])
            rec.backward(total, sample_ids=_joined(ge["ids"]),
                         weights=_joined(ge["weights"], "geffect_sample_weights"))
            div = dict(ge["div"]) if ge["div"] is not None else None
            sga = div.pop("sga", None) if div is not None else None
            ds = rec.measure(step=ge["step"], divergence=div, sga=sga)
        finally:
            rec.__exit__(None, None, None)
        if self.accelerator.num_processes > 1:
            ds = _across_ranks(ds, self.accelerator.num_processes, ge["ids"],
                               _joined(ge["weights"], "geffect_sample_weights") is not None)
        if self.is_world_process_zero():
            self._append(ds)
        if self.geffect_report:
            self.log(scalars(ds))

    def _append(self, ds) -> None:
        """Append the step; a rerun into the same directory first drops steps >= this one."""
        path, step = self.geffect_out, int(ds.step.values[0])
        if path.exists() and not getattr(self, "_ge_truncated", False):
            old = open_record(path, "geffect")
            if int(old.step.max()) >= step:
                if int(old.step.min()) >= step:
                    path.unlink()
                else:
                    write_record(old.sel(step=old.step < step), path, "geffect")
        self._ge_truncated = True
        append_record(ds, path, "geffect")


def _checkpointing(model) -> bool:
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):   # new, old name
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _stash(losses: list):
    def backward(loss, **kwargs):
        if kwargs:
            raise NotImplementedError(f"G-effects under the Trainer: accelerator.backward was "
                                      f"called with {sorted(kwargs)} (LOMO or DeepSpeed); "
                                      f"expected a plain backward")
        losses.append(loss)
    return backward


def _kept(compute_loss, computed: list):
    def kept(*args, **kwargs):
        out = compute_loss(*args, **kwargs)
        computed.append(out[0] if isinstance(out, tuple) else out)
        return out
    return kept


def _joined(ids: list[list | None], what: str = "geffect_sample_ids") -> list | None:
    """Concatenate the micro-batches' sample ids (or weights); all None -> None (one
    instance per row; no weights)."""
    if all(i is None for i in ids):
        return None
    if any(i is None for i in ids):
        noun = "weights" if what == "geffect_sample_weights" else "ids"
        raise ValueError(f"{what} returned None for some micro-batches of a step and {noun} "
                         f"for others; expected {noun} for all or for none")
    return [i for micro in ids for i in micro]


def _gathered(batch: Mapping, world: int) -> dict:
    """Under DDP: every rank's rows of a batch dict, in rank order, right-padded to one width
    (padding: attention 0, label -100, so no row's risk changes). One process: the batch."""
    if world == 1:
        return dict(batch)
    import torch
    import torch.distributed as dist

    parts = [None] * world
    dist.all_gather_object(parts, {k: (v.cpu() if hasattr(v, "cpu") else list(v))
                                   for k, v in batch.items()})
    width = max(p["input_ids"].shape[1] for p in parts)
    fill = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    out = {}
    for key in parts[0]:
        if key in fill:
            out[key] = torch.cat([torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]),
                                                          value=fill[key]) for p in parts])  # (B, T)
        else:
            out[key] = [x for p in parts for x in p[key]]
    return out


def _across_ranks(ds, world: int, micro_ids: list[list[str] | None], weighted: bool):
    """Under DDP (gradients averaged over `world` ranks): the step's record for all ranks.

    `.grad` is already the global gradient, so `geffect`, `geffect_instance` and the norms are
    global. Each rank's point-wise rows hold its instances' PG-effects against its local loss
    with their local weights (`weighted`), or their contributions to its local gradient; the
    global contribution and weight are 1/world of the local ones. Samples are ordered as one
    process would see them (micro-batch, then rank, then row); contributions of rows sharing
    an id are summed and divided by the instance's (shared) global weight. Unnamed rows (no
    `geffect_sample_ids`) are prefixed with their rank, in rank order. `objective_loss`: the
    mean over ranks.
    """
    import numpy as np
    import torch.distributed as dist

    w = ds.sample_weight.values[0] if weighted else np.ones(ds.sizes["sample"])   # (S,)
    contrib = ds.geffect_pointwise.values[0] * w[:, None, None] / world   # (S, P, G)
    ids = [str(i) for i in ds.sample_id.values[0]]
    parts = [None] * world
    dist.all_gather_object(parts, (micro_ids, ids, contrib, w / world if weighted else w,
                                   float(ds.objective_loss.values[0])))
    named = any(i is not None for i in micro_ids)
    if named:
        order = list(dict.fromkeys(i for m in range(len(micro_ids)) for p in parts
                                   for i in p[0][m]))
    else:
        order = [f"rank{r}/{i}" for r, p in enumerate(parts) for i in p[1]]
    out = np.zeros((len(order), *contrib.shape[1:]))                 # (S_all, P, G)
    weight = np.full(len(order), np.nan)                             # (S_all,)
    for r, (_, ids_r, c_r, w_r, _) in enumerate(parts):
        for i, v, wi in zip(ids_r, c_r, w_r):
            s = order.index(i if named else f"rank{r}/{i}")
            out[s] += v                                              # (P, G)
            if not np.isnan(weight[s]) and not np.isclose(weight[s], wi, rtol=1e-12, atol=0):
                raise ValueError(f"sample {i!r}: its rows carry different weights on different "
                                 f"ranks ({weight[s]} and {wi}); one instance needs one weight")
            weight[s] = wi
    if weighted:
        out /= weight[:, None, None]
    ds = ds.drop_vars(["geffect_pointwise", "sample_id", "sample_weight", "sample"])
    return ds.assign(
        geffect_pointwise=(("step", "sample", "probe", "group"), out[None]),
        sample_id=(("step", "sample"), np.array([order], dtype=object)),
        sample_weight=(("step", "sample"), weight[None]),
        objective_loss=(("step",), [float(np.mean([p[4] for p in parts]))]),
    ).assign_coords(sample=("sample", np.arange(len(order), dtype=np.int64)))


def _to(batch: Mapping, device) -> dict:
    """A batch dict with its tensors on `device` (lists such as instance_id kept)."""
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
