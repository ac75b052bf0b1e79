"""What the training record monitors, and when it pays for a forward to do so.

The forget and retain NLL of `train.nc` come from the step's own forwards where the objective
ran that split (free). A retain NLL for an objective that reads no retain split needs an
extra forward; it runs only on monitoring steps (`monitor_every`, G-effect steps, steps an
evaluation follows) and is NaN in between (geffect/SCHEMA.md). The gradient norm is read
without rewriting the gradients when nothing is clipped.
"""
from __future__ import annotations

import numpy as np
import torch

from .config import RunConfig


def monitoring(cfg: RunConfig, step: int, measure: bool) -> bool:
    """Whether `step` pays for monitoring forwards the objective does not need: every
    `monitor_every` steps (0: never), every G-effect step and every step an evaluation follows."""
    return bool(measure or (cfg.monitor_every and step % cfg.monitor_every == 0)
                or (cfg.eval_every and (step + 1) % cfg.eval_every == 0))


@torch.no_grad()
def step_nlls(outs: dict) -> dict[str, float]:
    """Mean token NLL of the forget / retain batches the step already ran (no forward)."""
    return {s: float(outs[s].nll.mean()) for s in ("forget", "retain") if s in outs}


def monitor_nlls(model, task, cfg: RunConfig, step: int, loss, seen: dict, extra: bool):
    """(nll_forget, nll_retain) for the training record, before the update.

    Both come from the step's own forwards (micro-batch 0) when it ran that split; forget
    prefers the objective's "forget_nll" term. A retain NLL the objective did not need costs a
    forward on the step's retain batch and is computed only when `extra` (a monitoring step);
    otherwise it is NaN, as is the forget NLL of an objective that reads no forget split.
    """
    term = loss.terms.get("forget_nll")
    nll_f = seen.get("forget", np.nan) if term is None else float(torch.as_tensor(term).detach())
    nll_r = seen.get("retain", np.nan)
    if "retain" not in seen and extra:
        from .engine import mean_nll

        nll_r = mean_nll(model, task.batch(step, cfg.batch_size, ("retain",), cfg.seed)["retain"])
    return nll_f, nll_r


def clipped_grad_norm(params, max_norm: float | None) -> float:
    """Global L2 norm of the gradients before clipping; clips to `max_norm` when it is set.

    Without a limit only the norm is computed: `clip_grad_norm_(params, inf)` gives the same
    norm but also multiplies every gradient by 1, a second pass over all of them.
    """
    if max_norm:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
