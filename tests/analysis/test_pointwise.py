"""Point-wise G-effects: points are the recorded values, outliers are labelled by instance_id."""
from __future__ import annotations

import numpy as np
import pytest

from analysis import plots, pointwise, testing


@pytest.fixture(scope="module")
def sga():
    return testing.geffect_run_record(seed=1, method="sga", r=0.5)


def test_robust_z_by_hand():
    z = pointwise.robust_z(np.array([[1.0], [2.0], [3.0], [4.0], [100.0]]))
    # median 3, MAD = median(2, 1, 0, 1, 97) = 1, scaled by 1.4826
    np.testing.assert_allclose(z[:, 0], np.array([2, 1, 0, 1, 97]) / 1.4826)
    assert np.all(pointwise.robust_z(np.ones((4, 1))) == 0)         # no spread: nothing stands out


def test_outliers_farthest_first_and_capped():
    x = np.array([0.0, 0.1, -0.1, 0.2, -0.2, 50.0, 0.0, -80.0])
    y = np.zeros_like(x) + np.array([0, 0.1, 0, -0.1, 0, 0, 0.1, 0])
    assert pointwise.outliers(x, y).tolist() == [7, 5]
    assert pointwise.outliers(x, y, top=1).tolist() == [7]
    assert pointwise.outliers(x[:5], y[:5]).tolist() == []
    assert pointwise.outliers(x[-4:], y[-4:]).tolist() == []          # too few points to tell


def test_an_injected_outlier_is_labelled_by_its_instance_id(sga):
    rec = sga.copy(deep=True)
    pw = rec.geffect_pointwise.values                                # (step, sample, probe, group)
    pw[2, 1, 0, 0] -= 500.0                                          # one instance at step 2
    ax = plots.plot_pointwise(rec)
    texts = [t.get_text() for t in ax.texts]
    assert texts == [str(rec.sample_id.values[2, 1])]
    x = rec.geffect_pointwise.sum("group").sel(probe="forget").values.ravel()
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], x)
    np.testing.assert_allclose(ax.collections[0].get_array(),
                               np.repeat(rec.step.values, rec.sizes["sample"]))  # coloured by step
    assert len(plots.plot_pointwise(rec, label_outliers=0).texts) == 0


def test_padding_is_dropped(sga):
    rec = sga.copy(deep=True)
    rec["sample_id"] = rec.sample_id.copy(data=rec.sample_id.values.copy())
    rec.sample_id.values[0, 3] = ""
    rec.geffect_pointwise.values[0, 3] = np.nan
    t = pointwise.pointwise_table(rec)
    assert t["x"].size == rec.sizes["step"] * rec.sizes["sample"] - 1
    assert "" not in t["label"]


def test_pointwise_refuses_combined_records(methods_record):
    with pytest.raises(ValueError, match="single run"):
        plots.plot_pointwise(methods_record)


def test_instance_geffects_are_sorted_accumulated_sums(sga):
    ax = plots.plot_instance_geffects(sga)
    g = sga.geffect_instance.transpose("step", "instance", "group").values
    want = {str(sga.instance_id.values[i]): sum(g[t, i, :].sum() for t in range(g.shape[0]))
            for i in range(g.shape[1])}
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    labels = [t.get_text() for t in ax.get_xticklabels()]
    heights = [b.get_height() for b in bars]
    assert heights == sorted(heights)                               # most negative first
    np.testing.assert_allclose(heights, [want[i] for i in labels])
    colours = {lab: b.get_facecolor() for lab, b in zip(labels, bars)}
    assert colours["forget-0"] != colours["retain-3"]
    with pytest.raises(ValueError, match="single run"):
        plots.plot_instance_geffects(sga.expand_dims(run=["a"]))
