"""`Recorder`: exact per-group, per-instance G-effects of one training step, as an xr.Dataset.

G-effect (Wang et al., ICLR 2025, Definition 1): e = <grad L, grad R>, per parameter group, in
both instance directions (see SCHEMA.md). Cost plan, reusing the training step's backward:

1. While the engine runs the objective forward(s) and `rec.backward(loss)`, hooks keep each
   hooked module's (activations, backprop) per row (norms: their tiny per-row gradients).
   `.grad` then holds grad L exactly as a plain step would.
2. `measure` runs each probe split forward and one backward of the summed per-instance risk
   with `torch.autograd.grad` (so `.grad` is untouched). That backward yields the aggregate
   risk gradient grad R_probe and, through the hooks, every probe instance's backprops, which
   are contracted with grad L on the fly: <grad L, grad R_i> per instance and group.
3. The stored objective rows are contracted with the grad R_probe of every probe at once:
   the point-wise <grad L(s), grad R_probe>. No per-instance gradient is ever formed.
   Given each row's weight w_s in the loss (L = sum_s w_s L_s, L_s instance s's own
   objective; the engine passes `Loss.weights`), the record stores the paper's PG-effect
   <grad L_s, grad R_probe> = <grad L(s), grad R_probe> / w_s and the weights.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr  # noqa: F401  (the return type)
from torch import Tensor, nn

from . import kernels, record, uses
from .capture import Call, Capture
from .functional import module_rows
from .groups import GroupTable, param_groups
from .risk import check_answers, row_risk
from .schema import REDUCTIONS, validate


class Recorder:
    """Measure G-effects around one training step (see the module docstring).

    Args:
        model: the causal LM being trained (HF-style: `model(input_ids=, attention_mask=)`
            returns `.logits`).
        probes: probe name ("forget", "retain") -> fixed batch dict with `input_ids`,
            `attention_mask`, `labels` (HF-style, unshifted) and `instance_id`.
        reduction: aggregate risk over a probe's instances: "mean" or "sum" of the R_i, or
            "token" (sum of all answer-token NLLs / their number: HF's `outputs.loss` on the
            probe batch, i.e. R_probe = sum_i n_i R_i / sum_i n_i).
        attrs: provenance for the record: `config` (dict or JSON str), `model`, `method`, ...
        probe_chunk: rows per probe forward/backward (None: the whole probe at once). The
            default 4 keeps the probe passes' activations below the training step's own, so
            measuring does not raise peak memory (SmolLM2-135M at B = P = 16: see bench/).
        fallback: module paths to measure with torch.func even if a kernel exists (tests).
        table: a precomputed `param_groups(model)`.
    """

    def __init__(self, model: nn.Module, probes: Mapping[str, Mapping], reduction: str = "mean",
                 *, attrs: Mapping | None = None, probe_chunk: int | None = 4,
                 fallback: Sequence[str] = (), table: GroupTable | None = None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if not probes:
            raise ValueError("probes: expected at least one probe batch, e.g. {'forget': batch}")
        for p, batch in probes.items():
            missing = {"input_ids", "attention_mask", "labels", "instance_id"} - set(batch)
            if missing:
                raise ValueError(f"probe {p!r}: batch lacks {sorted(missing)}")
        self.model, self.probes, self.reduction = model, dict(probes), reduction
        self.attrs, self.chunk = dict(attrs or {}), probe_chunk
        self.table = table or param_groups(model)
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.modules, self.kinds, self._own = {}, {}, {}
        for name, m in model.named_modules():
            own = [(k, q, self.table.use_group(name, k))
                   for k, q in m.named_parameters(recurse=False) if q.requires_grad]
            if own:
                self.modules[name], self._own[name] = m, own
                self.kinds[name] = None if name in fallback else kernels.kind_of(m)
        self._explicit = uses.explicit_uses(self.table, self._own)
        self._cap: Capture | None = None
        self._calls: list[Call] = []
        self._loss, self._ids, self._pointwise_ok = float("nan"), None, False
        self._gl_uses: dict = {}
        self._covered_cache: dict = {}
        self._weights: list[float] | None = None

    @property
    def fallback_groups(self) -> list[str]:
        """Groups with a module measured by torch.func (no kernel, or moved to an enclosing
        module whose rows are instances, e.g. an MoE block); known after the first forward."""
        moved = self._cap.delegate if self._cap is not None else {}
        return sorted({self.table.names[gi] for name in self.modules
                       if self.kinds[name] is None or name in moved
                       for _, _, gi in self._own[name]})

    # ---- phase 1: the training step ---------------------------------------------------------
    def __enter__(self) -> "Recorder":
        expand = {n for n, m in self.modules.items() if isinstance(m, nn.Embedding)}
        self._cap = Capture(self.model, self.modules, self._keep, expand).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._cap is not None:
                self._cap.remove()
        finally:
            self._cap, self._calls, self._gl_uses = None, [], {}

    def _kind(self, call: Call) -> str | None:
        """The call's kernel, or None for torch.func (no kernel, or parameters moved here)."""
        return self.kinds.get(call.name) if call.covers == (call.name,) else None

    def _keep(self, call: Call, b: Tensor) -> None:
        uses.accumulate(self, call, b, self._gl_uses)
        kind = self._kind(call)
        if kind == "norm":                                          # tiny: form per-row grads
            call.dense = kernels.norm_per_row(call.module, call.input, b)
            call.args, call.kwargs = (), {}
        elif kind in ("linear", "conv1d"):
            call.b, call.live = kernels.compact(b)                  # only the live tokens
        else:
            call.b = b
        self._calls.append(call)

    def backward(self, loss: Tensor | None, sample_ids: Sequence[str] | None = None,
                 weights: Sequence[float] | None = None) -> None:
        """Backpropagate the objective (into `.grad`, as a plain step) and keep its rows.

        Args:
            loss: the scalar objective, or None when the engine wrote `.grad` itself (an
                objective that owns its update); the point-wise G-effects are then NaN.
            sample_ids: one id per captured row, in forward-call order; rows sharing an id
                form one objective instance. None: every row is its own instance.
            weights: one weight w per captured row, the row's weight in `loss` relative to
                its instance's own objective (L = sum_s w_s L_s; rows of one instance share
                it). With weights the point-wise G-effects are the paper's <grad L_s, grad R>;
                without, the contributions <grad L(s), grad R> (weight 1).
        """
        if self._cap is None:
            raise RuntimeError("Recorder.backward must run inside `with Recorder(...) as rec:`")
        if loss is None:
            self._calls, self._pointwise_ok, self._gl_uses = [], False, None
        else:
            self._loss = float(loss.detach())
            loss.backward()
            self._pointwise_ok = True
        self._cap.active = False
        self._obj_rows = list(self._cap.forward_rows)
        rows = sum(self._obj_rows)
        if sample_ids is None:
            sample_ids = [f"row{i}" for i in range(rows)]
        if self._pointwise_ok and len(sample_ids) != rows:
            raise ValueError(f"sample_ids: expected one id per captured row, {rows} rows over "
                             f"{len(self._cap.forward_rows)} forward calls "
                             f"{self._cap.forward_rows}; found {len(sample_ids)} ids")
        if weights is not None and len(weights) != len(sample_ids):
            raise ValueError(f"weights: expected one weight per captured row ({len(sample_ids)}),"
                             f" found {len(weights)}")
        self._ids = [str(s) for s in sample_ids]
        self._weights = None if weights is None else [float(w) for w in weights]

    # ---- phase 2: probes and contractions ---------------------------------------------------
    def _covered(self, call: Call) -> list[tuple[str, nn.Parameter, int]]:
        """(name relative to the call's module, parameter, use group) the call measures."""
        key = (call.name, call.covers)
        if key not in self._covered_cache:                          # once per module
            out = []
            for m in call.covers:
                rel = "" if m == call.name else m[len(call.name) + 1:] + "."
                out += [(rel + k, q, gi) for k, q, gi in self._own[m]]
            self._covered_cache[key] = out
        return self._covered_cache[key]

    def _rows(self, call: Call, b: Tensor | None, dirs: Mapping[int, Tensor],
              by_dir: Mapping[int, list[int]] | None = None) -> dict[int, Tensor]:
        """Group index -> (N,) <dirs, grad_n> over the parameters the call measures.

        dirs: id(param) -> (D, *shape). Column d goes to group by_dir[id(param)][d] where given
        (a tied matrix's per-use directions), else to the call's own use group (D = 1)."""
        covered = self._covered(call)
        g = {k: dirs[id(q)] for k, q, _ in covered}
        kind = self._kind(call)
        if call.dense is not None:
            res = {k: kernels.dense_rows(call.dense[k], g[k]) for k in g}
        elif kind == "norm":
            dense = kernels.norm_per_row(call.module, call.input, b)
            res = {k: kernels.dense_rows(dense[k], g[k]) for k in g}
        elif kind is None:                                          # one jvp per group
            sets: dict = {}
            for k, q, gi in covered:
                sets.setdefault(("p", k) if by_dir and id(q) in by_dir else gi, []).append(k)
            self._cap.active = False                                # re-running: record nothing
            try:
                res = module_rows(call.module, call.args, call.kwargs, b, g, call.out_index,
                                  [tuple(v) for v in sets.values()])
            finally:
                self._cap.active = self._probing
            covered = [c for c in covered if c[0] in res]
        else:
            a = call.input
            if kind.endswith("embedding") and a.shape[0] != b.shape[0]:
                a = a.expand(b.shape[0], *a.shape[1:])              # broadcast position ids
            res = kernels.rows_inner(kind, call.module, a, b, g, call.live)
        out: dict[int, Tensor] = {}
        for k, q, gi in covered:
            v = res[k]                                              # (N, D)
            cols = by_dir.get(id(q)) if by_dir else None
            for d, gd in enumerate(cols or [gi]):
                out[gd] = out[gd] + v[:, d] if gd in out else v[:, d]
        return out

    def _probe_pass(self, grad_l: dict[int, Tensor]):
        """Per probe, in turn: the aggregate risk gradient (one backward with hooks, which
        also contracts every probe instance with grad L), its group sums with grad L and
        with itself, and the point-wise G-effects of the stored objective rows against it.
        Only one probe's aggregate gradient is alive at a time (peak memory)."""
        n_g = len(self.table)
        dirs = {k: v.unsqueeze(0) for k, v in grad_l.items()}       # (1, *shape), views
        inst, risks, ge, rsq, pw = [], [], [], [], []
        gr_uses: dict = {}                                          # per probe, see uses.py

        def on_probe(call: Call, b: Tensor) -> None:
            uses.accumulate(self, call, b, gr_uses)
            for gi, v in self._rows(call, b, dirs).items():
                block[:, gi] += v

        for p, batch in self.probes.items():
            labels = batch["labels"]
            counts = check_answers(labels, f"probe {p!r}")            # (N,) answer tokens
            n = labels.shape[0]
            # backward of sum_i c_i R_i: token needs sum_i n_i R_i; the instance rows are
            # divided by c_i again below, so they stay <grad L, grad R_i>
            scale = (counts.to(self.params[0][1].dtype) if self.reduction == "token"
                     else torch.ones(n, dtype=self.params[0][1].dtype))   # (N,)
            step = self.chunk or n
            buf: list[Tensor] | None = None
            gr_uses: dict = {}
            self._cap.on_backprop, self._probing = on_probe, True
            try:
                for lo in range(0, n, step):
                    sl = slice(lo, min(lo + step, n))
                    block = torch.zeros(sl.stop - lo, n_g, dtype=self.params[0][1].dtype)  # (n, G)
                    self._cap.active = True
                    with torch.enable_grad():
                        out = self.model(input_ids=batch["input_ids"][sl],
                                         attention_mask=batch["attention_mask"][sl])
                        r = row_risk(out.logits, labels[sl])       # (n,)
                        del out
                        grads = torch.autograd.grad((r * scale[sl].to(r.dtype)).sum(),
                                                    [q for _, q in self.params],
                                                    allow_unused=True)
                    self._cap.active = False
                    grads = [g if g is not None else torch.zeros_like(q)
                             for (_, q), g in zip(self.params, grads)]
                    if buf is None:
                        buf = grads                                 # no extra copy
                    else:
                        for acc, g in zip(buf, grads):
                            acc += g
                    del grads
                    if self.reduction == "token":
                        block /= scale[sl, None]                    # (n, G)
                    inst.append(block)
                    risks.append(r.detach())
            finally:
                self._cap.active, self._probing = False, False
            if self.reduction in ("mean", "token"):
                norm = float(n if self.reduction == "mean" else counts.sum())
                for acc in buf:
                    acc.mul_(1.0 / norm)
                for parts in gr_uses.values():
                    for v in parts.values():
                        v.mul_(1.0 / norm)
            grad_r = {id(q): acc for (_, q), acc in zip(self.params, buf)}
            ge.append(record.per_group(self, grad_l, grad_r, gr_uses))
            rsq.append(record.per_group(self, grad_r, grad_r, gr_uses))
            if self._pointwise_ok:
                pw.append(self._pointwise(grad_r, gr_uses))
            del buf, grad_r
        pw = torch.stack(pw, 1) if pw else None                     # (rows, P, G)
        return torch.cat(inst), torch.cat(risks), np.stack(ge), np.stack(rsq), pw

    @torch.no_grad()
    def _pointwise(self, grad_r: dict[int, Tensor], gr_uses: dict) -> Tensor:
        """(rows, G) <grad L(row), grad R_probe> per captured objective row (a tied matrix:
        <grad L(row), grad R_probe through use u> for each of its use groups u)."""
        rows = sum(self._obj_rows)
        starts = np.concatenate([[0], np.cumsum(self._obj_rows)])
        dirs = {k: v.unsqueeze(0) for k, v in grad_r.items()}       # (1, *shape), views
        by_dir = {}
        for key, groups in self.table.tied.items():
            if key in dirs:
                dirs[key], by_dir[key] = uses.directions(grad_r[key], gr_uses.get(key, {}),
                                                         groups)    # (U, *shape)
        out = torch.zeros(rows, len(self.table), dtype=self.params[0][1].dtype)  # (rows, G)
        for call in self._calls:
            lo = int(starts[call.forward])
            for gi, v in self._rows(call, call.b, dirs, by_dir).items():
                out[lo:lo + v.shape[0], gi] += v                     # (N,)
        return out

    def measure(self, step: int, divergence: Mapping[str, Mapping] | None = None,
                sga=None) -> xr.Dataset:
        """Run the probes and return this step's record (dims step=1, see SCHEMA.md).

        Args:
            step: the training step.
            divergence: {"forget": batch_f, "normal": batch_n} (the step's SGA rows) to also
                record the GA-vs-SGA Gram, cosine, norm ratio and r*; None to skip.
            sga: optional object or dict with `k` and `convention` (default: K inferred from
                the batch sizes, convention "gls").
        """
        if self._cap is None or self._ids is None:
            raise RuntimeError("Recorder.measure needs rec.backward(...) first, inside the block")
        grad_l = {id(p): (p.grad.detach() if p.grad is not None else torch.zeros_like(p))
                  for _, p in self.params}
        inst, risk, ge, rsq, pw = self._probe_pass(grad_l)
        self._calls = []
        ds = record.assemble(self, step, grad_l, inst, risk, ge, rsq, pw)
        if divergence is not None:
            div = record.divergence(self, step, grad_l, divergence, sga)
            ds = ds.merge(div, combine_attrs="override")
            ds.attrs.update(div.attrs)
        return validate(ds)

    _probing = False
