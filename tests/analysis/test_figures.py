"""write_figures: the named PNG and PDF files, nothing else, records untouched."""
from __future__ import annotations

import json

from analysis.figures import study_figures, write_figures


def _listing(dirs):
    return {p: p.stat().st_mtime_ns for d in dirs for p in d.rglob("*")}


def test_write_figures_writes_named_png_and_pdf(method_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _listing(method_dirs)
    out = tmp_path / "figs"
    written = write_figures(method_dirs, out)
    stems = {"geffect_curves", "training_stability"}
    for run in ("ga", "npo", "sga"):
        stems |= {f"{run}_geffect_bands", f"{run}_layer_heatmap", f"{run}_pointwise", f"{run}_first_order",
                  f"{run}_instances"}
    stems.add("sga_divergence")
    want = {f"{s}.{ext}" for s in stems for ext in ("png", "pdf")} | {"theory.txt", "figures.md"}
    assert {p.name for p in written} == want
    assert {p.name for p in out.iterdir()} == want | {"figures.json"}
    for p in written:
        head = p.read_bytes()[:8]
        if p.suffix == ".png":
            assert head.startswith(b"\x89PNG")
        elif p.suffix == ".pdf":
            assert head.startswith(b"%PDF")
    theory_text = (out / "theory.txt").read_text()
    assert "trade-off" not in theory_text                          # one SGA run is no sweep
    assert theory_text.count("First-order check") == 3 and "[npo: npo]" in theory_text
    assert json.loads((out / "figures.json").read_text())["files"] == [p.name for p in written]
    assert list(tmp_path.iterdir()) == [out]                       # nothing beside `out`
    assert _listing(method_dirs) == before                          # records untouched


def test_sweep_gets_the_smoothing_rate_figure_and_verdict(sweep_record, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made, text = study_figures(sweep_record)
    assert [m.name for m in made] == ["smoothing_rate"]
    assert "best r = +0.400" in text and "CONSISTENT" in text
    assert "r \u2208 {-0.5, +0, +0.4, +0.8}" in made[0].caption
    assert "empirically best r = +0.4" in made[0].caption
    assert list(tmp_path.iterdir()) == []                           # builders save nothing
