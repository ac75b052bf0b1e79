"""The theory check: trade-off picks, r* summaries and the first-order check, by hand values."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from analysis import reduce, testing, theory


def _metrics(utility, nll_f, nll_r, init_r, rates):
    n = len(rates)
    return xr.Dataset({"model_utility": ("run", utility), "nll_forget": ("run", nll_f),
                       "nll_retain": ("run", nll_r), "initial_nll_retain": ("run", init_r)},
                      coords={"run": [f"r{i}" for i in range(n)], "smoothing_rate": ("run", rates),
                              "convention": ("run", ["gls"] * n), "method": ("run", ["sga"] * n)})


def test_tradeoff_best_feasible_run_by_hand():
    m = _metrics(utility=[0.9, 0.8, 0.7, 0.2], nll_f=[2.0, 3.1, 4.0, 6.0],
                 nll_r=[1.0, 1.05, 1.3, 2.0], init_r=[1.0, 1.0, 1.0, 1.0], rates=[0.0, 0.3, 0.6, 0.9])
    t = theory.utility_given_forgetting(3.0)
    assert t.feasible(m).values.tolist() == [False, True, True, True]
    assert t.best(m) == "r1"                                         # 0.8 is the best feasible
    f = theory.forgetting_given_retention(0.1)
    assert f.feasible(m).values.tolist() == [True, True, False, False]
    assert f.best(m) == "r1"                                         # nll_forget 3.1 > 2.0
    assert theory.utility_given_forgetting(10.0).best(m) is None
    assert f.describe() == "max nll_forget subject to nll_retain <= 1.1 x initial nll_retain"
    assert t.describe() == "max model_utility subject to nll_forget >= 3"


def test_best_rate_per_metric(sweep_record):
    best = theory.best_rate_per_metric(reduce.final_metrics(sweep_record))
    assert best["model_utility"] == (pytest.approx(0.4), pytest.approx(0.8))
    assert best["nll_forget"][0] == pytest.approx(0.8)


def test_r_star_summary_matches_numpy(sweep_record):
    s = theory.r_star_summary(sweep_record)
    for run in s.run.values:
        v = sweep_record.r_star.sel(run=run).values
        assert s["mean"].sel(run=run).item() == pytest.approx(v.mean())
        assert s["std"].sel(run=run).item() == pytest.approx(v.std())
        assert s["q90"].sel(run=run).item() == pytest.approx(np.quantile(v, 0.9))
    pooled = theory.pooled_r_star(sweep_record, "gls")
    allv = sweep_record.r_star.values.ravel()
    assert pooled["mean"] == pytest.approx(allv.mean()) and pooled["n"] == allv.size
    assert pooled["std"] == pytest.approx(allv.std(ddof=1))


def test_compare_tolerance_and_edge():
    rates = np.array([-0.5, 0.0, 0.4, 0.8])
    pooled = {"mean": 0.38, "std": 0.05, "n": 10}
    assert "CONSISTENT" in theory.compare(0.4, rates, pooled)       # gap 0.02 <= max(0.05, 0.2)
    far = theory.compare(-0.5, rates, pooled)
    assert "NOT consistent" in far and "edge of the grid" in far and "0.880" in far
    assert "cannot compare" in theory.compare(0.4, rates, {"n": 0})


def test_check_verdict_numbers(sweep_record):
    rep = theory.check(sweep_record, [theory.utility_given_forgetting(3.2)])
    line = [l for l in rep.text.splitlines() if "trade-off" in l][0]
    assert "best r = +0.400" in line and "model_utility = 0.8" in line and ": CONSISTENT" in line
    assert rep.best[("gls", "max model_utility subject to nll_forget >= 3.2")] == pytest.approx(0.4)
    assert f"recorded r*: mean {float(sweep_record.r_star.mean()):+.3f}" in rep.text


def test_check_detects_disagreement(tmp_path):
    dirs = testing.write_sweep(tmp_path, r_star=-0.4)
    rep = theory.check(reduce.combine_runs(dirs), [theory.utility_given_forgetting(3.2)])
    assert "NOT consistent" in rep.text


def test_first_order_is_exact_on_consistent_records():
    g = testing.geffect_run_record(seed=4, n_steps=5, lr=0.03)
    fo = theory.first_order(g)                                      # lr from the config
    np.testing.assert_allclose(fo.predicted.values, fo.measured.values, rtol=1e-10, atol=1e-12)
    # by hand, step 1 forget: -lr * sum_groups geffect vs the mean forget risk change
    f = g.split.values == "forget"
    want = g.risk.values[2, f].mean() - g.risk.values[1, f].mean()
    assert fo.measured.sel(step=1, probe="forget").item() == pytest.approx(want)
    assert fo.predicted.sel(step=1, probe="forget").item() == pytest.approx(
        -0.03 * g.geffect.values[1, 0].sum())
    stats = theory.first_order_stats(fo)
    assert stats["forget"]["slope"] == pytest.approx(1.0) and stats["forget"]["corr"] == pytest.approx(1.0)
    assert stats["forget"]["n"] == 4


def test_first_order_uses_train_lr_and_flags_adam():
    g = testing.geffect_run_record(seed=4, n_steps=4, lr=0.03)
    train = xr.Dataset({"lr": ("step", [0.06] * 4)}, coords={"step": np.arange(4)})
    fo = theory.first_order(g, train)
    stats = theory.first_order_stats(fo)
    assert stats["retain"]["slope"] == pytest.approx(0.5)          # measured moved half as far
    text = theory.first_order_text(fo, optimizer="adamw")
    assert "not SGD" in text and "slope=+0.500" in text
    assert "not SGD" not in theory.first_order_text(fo, optimizer="sgd")


def test_first_order_needs_consecutive_steps():
    g = testing.geffect_run_record(n_steps=6).isel(step=[0, 2, 4])
    with pytest.raises(ValueError, match="consecutive steps"):
        theory.first_order(g)


def test_ties_are_reported(sweep_record):
    rep = theory.check(sweep_record)
    line = [l for l in rep.text.splitlines() if "best r for nll_retain" in l][0]
    assert "tied at r = -0.5, +0, +0.4, +0.8" in line               # every run's retain NLL is 1.5
