"""Reductions checked against hand loops over groups, numpy, and directly built vectors."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from analysis import reduce, testing
from analysis.records import load_run
from geffect.testing import fake_record


@pytest.fixture
def rec():
    return fake_record(seed=3, n_steps=4, n_layers=6)


def test_by_layer_equals_hand_loop_over_groups(rec):
    got = reduce.by_layer(rec["geffect"])                          # (step, probe, layer)
    for layer in np.unique(rec.layer.values):
        hand = np.zeros((rec.sizes["step"], rec.sizes["probe"]))
        for g in range(rec.sizes["group"]):
            if rec.layer.values[g] == layer:
                hand += rec["geffect"].values[:, :, g]
        np.testing.assert_allclose(got.sel(layer=layer).transpose("step", "probe").values, hand)
    blocks = reduce.by_layer(rec["geffect"], blocks_only=True)
    assert blocks.layer.values.tolist() == list(range(6))


@pytest.mark.parametrize("key", ["band", "component", "layer"])
def test_partitions_sum_to_total(rec, key):
    parts = reduce.by_key(rec["geffect"], key).sum(key)
    np.testing.assert_allclose(parts.values, reduce.total(rec["geffect"]).values, rtol=1e-12)


def test_bands_in_canonical_order(rec):
    assert reduce.by_band(rec["geffect"]).band.values.tolist() == list(reduce.BANDS)
    assert reduce.by_component(rec["geffect"]).component.values.tolist() == ["embed", "attn", "mlp", "norm", "lm_head"]


def test_by_unknown_key_names_what_exists(rec):
    with pytest.raises(ValueError, match="expected a coordinate 'depth'"):
        reduce.by_key(rec["geffect"], "depth")


def test_cumulative_matches_numpy(rec):
    e = reduce.total(rec["geffect"]).sel(probe="forget")
    np.testing.assert_allclose(reduce.cumulative(e).values, np.cumsum(e.values))
    with_nan = e.copy(data=np.array([1.0, np.nan, 2.0, 3.0]))
    assert reduce.cumulative(with_nan).values.tolist() == [1.0, 1.0, 3.0, 6.0]


def test_forget_vs_retain_is_the_total_per_probe(rec):
    fr = reduce.forget_vs_retain(rec)
    np.testing.assert_allclose(fr.unlearning.values, rec["geffect"].values[:, 0].sum(-1))
    np.testing.assert_allclose(fr.retaining.values, rec["geffect"].values[:, 1].sum(-1))


def test_probe_risk_mean_and_sum(rec):
    risk = reduce.probe_risk(rec)
    f = rec.split.values == "forget"
    np.testing.assert_allclose(risk.sel(probe="forget").values, rec.risk.values[:, f].mean(1))
    np.testing.assert_allclose(risk.sel(probe="retain").values, rec.risk.values[:, ~f].mean(1))
    summed = reduce.probe_risk(rec.assign_attrs(risk_reduction="sum"))
    np.testing.assert_allclose(summed.sel(probe="forget").values, rec.risk.values[:, f].sum(1))
    pooled = reduce.probe_risk(rec.assign_attrs(risk_reduction="token"))
    n = rec.n_tokens.values[f].astype(float)
    np.testing.assert_allclose(pooled.sel(probe="forget").values,
                               (rec.risk.values[:, f] * n).sum(1) / n.sum())


def test_geffect_is_instance_mean_in_fakes(rec):
    """The fake's consistency, which the first-order test relies on."""
    f = rec.split.values == "forget"
    np.testing.assert_allclose(rec.geffect.sel(probe="forget").values,
                               rec.geffect_instance.values[:, f].mean(1))


def _divergence_record(seed=0, k=4, r=0.3, with_gram=True):
    """Per-group records computed from explicit gradient vectors, and the vectors themselves."""
    rng = np.random.default_rng(seed)
    groups = fake_record(n_layers=3).group
    sizes = rng.integers(2, 9, groups.size)
    a, b = -(1 - r + r / k), -(k - 1) * r / k                      # gls: grad L = a g_f + b gbar
    steps, vecs = 3, []
    cos, ratio = np.zeros((steps, groups.size)), np.zeros((steps, groups.size))
    gram, gsq = np.zeros((steps, groups.size, 2, 2)), np.zeros((steps, groups.size))
    for s in range(steps):
        row = []
        for g, n in enumerate(sizes):
            gf, gn = rng.standard_normal(n), rng.standard_normal(n)
            ga, sga = -gf, a * gf + b * gn
            cos[s, g] = ga @ sga / np.linalg.norm(ga) / np.linalg.norm(sga)
            ratio[s, g] = np.linalg.norm(sga) / np.linalg.norm(ga)
            gram[s, g] = [[gf @ gf, gf @ gn], [gn @ gf, gn @ gn]]
            gsq[s, g] = sga @ sga
            row.append((ga, sga))
        vecs.append(row)
    ds = xr.Dataset({"cosine_ga_sga": (("step", "group"), cos),
                     "norm_ratio_ga_sga": (("step", "group"), ratio),
                     "grad_sq_norm": (("step", "group"), gsq)},
                    coords={"step": np.arange(steps), "group": groups, "band": groups.band,
                            "layer": groups.layer, "component": groups.component,
                            "split_a": ["forget", "normal"], "split_b": ["forget", "normal"]})
    if with_gram:
        ds["gram"] = (("step", "group", "split_a", "split_b"), gram)
    return ds, vecs


@pytest.mark.parametrize("with_gram", [True, False])
def test_band_divergence_equals_concatenated_vectors(with_gram):
    ds, vecs = _divergence_record(with_gram=with_gram)
    got = reduce.divergence(ds, "band")
    bands = ds.band.values
    for s, row in enumerate(vecs):
        for band in reduce.BANDS:
            idx = np.flatnonzero(bands == band)
            ga = np.concatenate([row[i][0] for i in idx])
            sga = np.concatenate([row[i][1] for i in idx])
            want_cos = ga @ sga / np.linalg.norm(ga) / np.linalg.norm(sga)
            want_ratio = np.linalg.norm(sga) / np.linalg.norm(ga)
            assert got.cosine.sel(step=s, band=band).item() == pytest.approx(want_cos, rel=1e-10)
            assert got.norm_ratio.sel(step=s, band=band).item() == pytest.approx(want_ratio, rel=1e-10)
        ga = np.concatenate([v[0] for v in row])
        sga = np.concatenate([v[1] for v in row])
        whole = reduce.divergence(ds, None)
        assert whole.cosine.sel(step=s).item() == pytest.approx(ga @ sga / np.linalg.norm(ga) / np.linalg.norm(sga), rel=1e-10)


def test_divergence_needs_sga_variables(rec):
    with pytest.raises(ValueError, match="cosine_ga_sga"):
        reduce.divergence(rec.drop_vars("cosine_ga_sga"))


def test_last_and_first_valid():
    da = xr.DataArray([[1.0, 2.0, np.nan], [np.nan, np.nan, np.nan], [np.nan, 5.0, 6.0]],
                      dims=("run", "step"), coords={"step": [0, 1, 2]})
    np.testing.assert_array_equal(reduce.last_valid(da, "step").values, [2.0, np.nan, 6.0])
    np.testing.assert_array_equal(reduce.first_valid(da, "step").values, [1.0, np.nan, 5.0])
    assert "step" not in reduce.last_valid(da, "step").coords


def test_instance_table_joins_on_instance_id(tmp_path):
    run = load_run(testing.write_run(tmp_path / "ga", method="ga"))
    shuffled = run.eval.isel(instance=[4, 0, 5, 2, 1, 3])          # order must not matter
    table = reduce.instance_table(run.geffect, shuffled)
    assert sorted(table.instance.values) == sorted(run.geffect.instance_id.values)
    for iid in table.instance.values:
        i = list(run.geffect.instance_id.values).index(iid)
        j = list(run.eval.instance_id.values).index(iid)
        assert table.geffect_cum.sel(instance=iid).item() == pytest.approx(
            run.geffect.geffect_instance.values[:, i].sum())
        assert table.nll.sel(instance=iid).item() == run.eval.nll.values[-1, j]
        assert table.split.sel(instance=iid).item() == run.geffect.split.values[i]


def test_combine_runs_coords_and_values(sweep_dirs, sweep_record):
    ds = sweep_record
    assert sorted(ds.smoothing_rate.values.tolist()) == [-0.5, 0.0, 0.4, 0.8]
    assert set(ds.method.values) == {"sga"} and set(ds.convention.values) == {"gls"}
    for d in sweep_dirs:
        run = load_run(d)
        one = ds.sel(run=d.name)
        assert one.smoothing_rate.item() == run.config["hparams"]["r"]
        assert one.group.values.tolist() == run.geffect.group.values.tolist()
        np.testing.assert_allclose(one.geffect.transpose("step", "probe", "group").values,
                                   run.geffect.geffect.values)
        np.testing.assert_allclose(one.geffect_total.values, run.geffect.geffect.sum("group").values)
        np.testing.assert_allclose(one.summary.values, run.eval.summary.values)


def test_combine_runs_outer_joins_steps_and_methods(tmp_path):
    dirs = [testing.write_run(tmp_path / "ga", method="ga", n_steps=3),
            testing.write_run(tmp_path / "sga", method="sga", r=0.5, n_steps=5, with_eval=False)]
    ds = reduce.combine_runs(dirs)
    assert ds.sizes["step"] == 5 and ds.method.values.tolist() == ["ga", "sga"]
    assert ds.smoothing_rate.values.tolist() == [0.0, 0.5]
    assert np.isnan(ds.loss.sel(run="ga", step=4).item())
    assert np.isnan(ds.r_star.sel(run="ga")).all() and np.isfinite(ds.r_star.sel(run="sga")).all()
    assert np.isnan(ds.summary.sel(run="sga")).all()


def test_combine_runs_expands_sweep_dir(sweep_dirs):
    ds = reduce.combine_runs([sweep_dirs[0].parent])
    assert ds.sizes["run"] == len(sweep_dirs)


def test_combine_runs_rejects_non_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        reduce.combine_runs([tmp_path])


def test_final_metrics_values(sweep_record):
    m = reduce.final_metrics(sweep_record)
    r = m.smoothing_rate.values
    np.testing.assert_allclose(m.model_utility.values, 0.8 - (r - 0.4) ** 2)
    np.testing.assert_allclose(m.initial_model_utility.values, 0.6)
    np.testing.assert_allclose(m.nll_forget.values, 3.0 + r)        # eval NLL on the forget split
    np.testing.assert_allclose(m.initial_nll_forget.values, 2.0)
    np.testing.assert_allclose(m.nll_retain.values, 1.5)
