"""Does SGA's derived optimal smoothing rate hold? The empirical check, in numbers.

Smoothed Gradient Ascent (SGA, arXiv:2510.22376) derives an optimal smoothing rate r* from
the geometry of the forget and normal gradients; the engine records it online at every
measured step (`r_star` in geffect.nc). This module compares it with the rate that is best
empirically in a sweep over r, under a forget-utility trade-off that is stated explicitly
(`Tradeoff`), and prints a plain-text verdict with the numbers.

It also runs the first-order check behind every G-effect (Wang et al. 2025, Eq. 3): after an
SGD step of size eta, R changes by about -eta * <grad L, grad R>, so the measured step-to-step
change of the probe risk should match -eta * e (e summed over groups). This is exact to first
order only for plain SGD without clipping; Adam rescales each coordinate, so for Adam runs the
check measures how far the G-effect is from the realised change, and the verdict says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import reduce

# +1: higher is better (more forgetting or more utility); -1: lower is better.
DIRECTIONS = {"model_utility": +1, "forget_quality": +1, "forget_Q_A_Prob": -1,
              "forget_Q_A_ROUGE": -1, "forget_truth_ratio": +1, "nll_forget": +1,
              "nll_retain": -1}


@dataclass(frozen=True)
class Tradeoff:
    """Pick a run: optimise `objective` among the runs whose `constraint` is within bounds.

    Attributes:
        objective: a final metric (see `reduce.final_metrics`), e.g. "model_utility".
        maximize: maximise (True) or minimise the objective.
        constraint: a final metric the run must satisfy, or None.
        minimum, maximum: bounds on the constraint (None: unbounded).
        relative: bounds are multiples of each run's initial value of the constraint.
    """

    objective: str = "model_utility"
    maximize: bool = True
    constraint: str | None = "nll_forget"
    minimum: float | None = None
    maximum: float | None = None
    relative: bool = False

    def describe(self) -> str:
        goal = f"{'max' if self.maximize else 'min'} {self.objective}"
        if self.constraint is None:
            return goal
        ref = f" x initial {self.constraint}" if self.relative else ""
        cons = [f"{self.constraint} >= {self.minimum:g}{ref}" if self.minimum is not None else "",
                f"{self.constraint} <= {self.maximum:g}{ref}" if self.maximum is not None else ""]
        return f"{goal} subject to {' and '.join(c for c in cons if c)}"

    def feasible(self, metrics: xr.Dataset) -> xr.DataArray:
        """(run,) bool: the runs that satisfy the constraint."""
        ok = metrics[self.objective].notnull()
        if self.constraint is None:
            return ok
        value = metrics[self.constraint]
        scale = metrics[f"initial_{self.constraint}"] if self.relative else 1.0
        if self.minimum is not None:
            ok &= value >= self.minimum * scale
        if self.maximum is not None:
            ok &= value <= self.maximum * scale
        return ok

    def best(self, metrics: xr.Dataset) -> str | None:
        """The name of the best feasible run, or None when no run is feasible."""
        ok = self.feasible(metrics)
        if not bool(ok.any()):
            return None
        score = metrics[self.objective].where(ok)
        pick = score.argmax("run") if self.maximize else score.argmin("run")
        return str(metrics["run"].values[int(pick)])


def utility_given_forgetting(min_forget_nll: float) -> Tradeoff:
    """Best model utility among runs whose final forget NLL is at least `min_forget_nll`."""
    return Tradeoff("model_utility", True, "nll_forget", minimum=min_forget_nll)


def forgetting_given_retention(tol: float = 0.1) -> Tradeoff:
    """Highest forget NLL among runs whose retain NLL is at most (1 + tol) x its initial value."""
    return Tradeoff("nll_forget", True, "nll_retain", maximum=1.0 + tol, relative=True)


# ---- r* ------------------------------------------------------------------------------------

def r_star_summary(sweep: xr.Dataset) -> xr.Dataset:
    """Mean, spread and 10/90 % quantiles over steps of the recorded r*, per run.

    Returns a Dataset on `run` (only runs that recorded r*) with mean, std, q10, q90, n.
    """
    if "r_star" not in sweep:
        raise ValueError("the combined record has no r_star (only SGA runs with G-effects "
                         f"record it); found {list(sweep.data_vars)}")
    rs = sweep["r_star"]                                            # (run, step)
    has = rs.notnull().any("step")
    rs = rs.sel(run=has)
    return xr.Dataset({"mean": rs.mean("step"), "std": rs.std("step"),
                       "q10": rs.quantile(0.1, "step", skipna=True).drop_vars("quantile"),
                       "q90": rs.quantile(0.9, "step", skipna=True).drop_vars("quantile"),
                       "n": rs.notnull().sum("step")})


def pooled_r_star(sweep: xr.Dataset, convention: str | None = None) -> dict:
    """r* over every step of every SGA run (of one convention): mean, std, q10, q90, n."""
    rs = sweep["r_star"]
    if convention is not None:
        rs = rs.sel(run=sweep.convention == convention)
    v = rs.values[np.isfinite(rs.values)]
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "q10": math.nan, "q90": math.nan, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "q10": float(np.quantile(v, 0.1)), "q90": float(np.quantile(v, 0.9)), "n": int(v.size)}


# ---- the empirical best r --------------------------------------------------------------------

def best_rate_per_metric(metrics: xr.Dataset) -> dict[str, tuple[float, float]]:
    """metric -> (best r, its value), each metric optimised in its own direction, no constraint."""
    out = {}
    for m, sign in DIRECTIONS.items():
        if m in metrics and bool(metrics[m].notnull().any()):
            run = Tradeoff(m, sign > 0, None).best(metrics)
            out[m] = (float(metrics.smoothing_rate.sel(run=run)), float(metrics[m].sel(run=run)))
    return out


def ties(metrics: xr.Dataset, metric: str, value: float) -> list[float]:
    """The rates whose final `metric` equals `value` (to 1e-9 relative): several means a tie."""
    hit = np.isclose(metrics[metric].values, value, rtol=1e-9, atol=0)
    return sorted(float(r) for r in metrics.smoothing_rate.values[hit])


def _grid_step(rates: np.ndarray, r: float) -> float:
    """Half the distance to the nearest other grid rate: the resolution of the empirical best."""
    others = np.abs(np.unique(rates[np.isfinite(rates)]) - r)
    others = others[others > 0]
    return float(others.min()) / 2 if others.size else math.inf


def compare(best_r: float, rates: np.ndarray, pooled: dict) -> str:
    """One line: is the empirical best r consistent with the recorded r*?"""
    if pooled["n"] == 0:
        return "no r* recorded: cannot compare"
    tol = max(pooled["std"], _grid_step(rates, best_r))
    gap = abs(best_r - pooled["mean"])
    edge = best_r in (np.nanmin(rates), np.nanmax(rates))
    word = "CONSISTENT" if gap <= tol else "NOT consistent"
    note = " (best r at the edge of the grid: widen the grid to be sure)" if edge else ""
    return (f"|best r - mean r*| = {gap:.3f} vs tolerance {tol:.3f} "
            f"(max of r* spread and half the grid spacing): {word}{note}")


# ---- first-order check -------------------------------------------------------------------------

def first_order(geffect_ds: xr.Dataset, train_ds: xr.Dataset | None = None,
                lr: float | None = None) -> xr.Dataset:
    """Predicted vs measured change of each probe risk over one optimizer step.

    predicted[t] = -eta_t * sum_groups geffect[t, probe]; measured[t] = R(t+1) - R(t), with R
    the probe risk recorded in the G-effect record (fixed probe sets, so the change is the
    model's, not the batch's). Only steps t whose successor t+1 was also measured are used.
    eta_t is the training record's `lr` at step t, else `lr`, else the record config's lr.

    Returns:
        Dataset with `predicted` and `measured`, dims (step, probe).
    """
    e = reduce.total(geffect_ds["geffect"])                         # (step, probe)
    risk = reduce.probe_risk(geffect_ds)                            # (step, probe)
    steps = e["step"].values
    pairs = np.array([s for s in steps if s + 1 in set(steps)], dtype=int)
    if pairs.size == 0:
        raise ValueError("the first-order check needs G-effects at consecutive steps "
                         f"(geffect_every=1); recorded steps are {steps.tolist()}")
    if train_ds is not None and "lr" in train_ds:
        eta = train_ds["lr"].sel(step=pairs)
    else:
        if lr is None:
            import json
            lr = json.loads(geffect_ds.attrs.get("config", "{}")).get("lr")
        if lr is None:
            raise ValueError("no learning rate: pass train_ds (with `lr`) or lr=")
        eta = xr.DataArray(np.full(pairs.size, float(lr)), coords={"step": pairs})
    measured = risk.sel(step=pairs + 1).assign_coords(step=pairs) - risk.sel(step=pairs)
    predicted = -eta * e.sel(step=pairs)
    return xr.Dataset({"predicted": predicted.transpose("step", "probe"),
                       "measured": measured.transpose("step", "probe")})


def first_order_stats(fo: xr.Dataset) -> dict[str, dict[str, float]]:
    """probe -> n, Pearson correlation, slope of measured on predicted (through 0), and the
    median relative error |measured - predicted| / |measured|."""
    out = {}
    for probe in fo["probe"].values:
        p, m = fo.predicted.sel(probe=probe).values, fo.measured.sel(probe=probe).values
        ok = np.isfinite(p) & np.isfinite(m)
        p, m = p[ok], m[ok]
        corr = float(np.corrcoef(p, m)[0, 1]) if p.size > 1 and p.std() > 0 and m.std() > 0 else math.nan
        slope = float((p * m).sum() / (p * p).sum()) if (p * p).sum() > 0 else math.nan
        rel = float(np.median(np.abs(m - p) / np.maximum(np.abs(m), 1e-12))) if p.size else math.nan
        out[str(probe)] = {"n": int(p.size), "corr": corr, "slope": slope, "median_rel_err": rel}
    return out


def first_order_text(fo: xr.Dataset, optimizer: str = "", clipped: bool = False) -> str:
    lines = ["First-order check: measured R(t+1) - R(t) vs predicted -eta * sum_groups e(t)"]
    for probe, s in first_order_stats(fo).items():
        lines.append(f"  {probe:7s} n={s['n']:3d}  corr={s['corr']:+.3f}  slope={s['slope']:+.3f}  "
                     f"median relative error={s['median_rel_err']:.3f}")
    if optimizer.lower() != "sgd":
        lines.append(f"  note: optimizer is {optimizer or 'unknown'}, not SGD: the G-effect predicts "
                     "the change only for a plain gradient step, so agreement is not expected to be exact.")
    if clipped:
        lines.append("  note: gradients were clipped (max_grad_norm), which scales the step.")
    return "\n".join(lines)


# ---- the verdict -------------------------------------------------------------------------------

@dataclass
class TheoryReport:
    """What `check` found. `text` is the plain-text verdict."""

    metrics: xr.Dataset
    best: dict
    r_star: dict
    text: str


def check(sweep: xr.Dataset, tradeoffs: list[Tradeoff] | None = None) -> TheoryReport:
    """Empirically best r per metric and per trade-off vs the recorded r*, as a verdict.

    Args:
        sweep: runs combined along `run` (`analysis.reduce.combine_runs`); SGA runs are compared,
            GA runs (r = 0) are included with the convention of every SGA reading.
        tradeoffs: explicit forget-utility trade-offs; default: the highest forget NLL with the
            retain NLL within 10 % of its initial value, and the best model utility among runs
            whose forget NLL reached the median final forget NLL of the sweep.
    """
    metrics = reduce.final_metrics(sweep)
    if tradeoffs is None:
        tradeoffs = [forgetting_given_retention(0.1)]
        if "nll_forget" in metrics and "model_utility" in metrics:
            tradeoffs.append(utility_given_forgetting(float(metrics.nll_forget.median())))
    conventions = sorted({str(c) for c in metrics.convention.values if str(c)}) or [""]
    lines, best, pooled_all = [], {}, {}
    lines.append(f"Smoothing-rate study: {metrics.sizes['run']} runs; r* recorded online "
                 "(SGA, arXiv:2510.22376) vs the empirically best r.")
    for conv in conventions:
        sel = (metrics.convention == conv) | (metrics.method == "ga")
        sub = metrics.sel(run=sel & metrics.smoothing_rate.notnull())
        rates = sub.smoothing_rate.values
        pooled = pooled_r_star(sweep, conv) if "r_star" in sweep else {"n": 0}
        pooled_all[conv] = pooled
        lines.append(f"\n[{conv or 'all'}] rates {np.unique(rates).round(3).tolist()}")
        if pooled["n"]:
            lines.append(f"  recorded r*: mean {pooled['mean']:+.3f}, std {pooled['std']:.3f}, "
                         f"10-90% [{pooled['q10']:+.3f}, {pooled['q90']:+.3f}] over {pooled['n']} steps")
        for m, (r, v) in best_rate_per_metric(sub).items():
            best[(conv, m)] = r
            tied = ties(sub, m, v)
            tie = f"; tied at r = {', '.join(f'{t:+g}' for t in tied)}: no preference" if len(tied) > 1 else ""
            lines.append(f"  best r for {m:20s} ({'higher' if DIRECTIONS[m] > 0 else 'lower'} better): "
                         f"{r:+.3f} (value {v:.4g}{tie})")
        for t in tradeoffs:
            run = t.best(sub)
            if run is None:
                lines.append(f"  trade-off [{t.describe()}]: no run satisfies the constraint")
                continue
            r = float(sub.smoothing_rate.sel(run=run))
            best[(conv, t.describe())] = r
            lines.append(f"  trade-off [{t.describe()}]: best r = {r:+.3f} "
                         f"({t.objective} = {float(sub[t.objective].sel(run=run)):.4g}); "
                         + compare(r, rates, pooled))
    return TheoryReport(metrics=metrics, best=best, r_star=pooled_all, text="\n".join(lines))
