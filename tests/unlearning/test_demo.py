"""`make demo`'s story end to end on the tiny preset: every stage runs and writes its outputs."""
import json

from unlearning import demo


def test_demo_tiny_preset_writes_table_runs_and_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEFFECT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo_out"
    demo.main(["--preset", "tiny", "--out", str(out)])
    rows = json.loads((out / "summary.json").read_text())
    assert [r["model"] for r in rows] == ["target (before)", "ga (after)", "sga (after)",
                                          "npo (after)"]
    assert all(r["forget NLL"] > 0 and r["retain NLL"] > 0 for r in rows)
    assert rows[1]["forget NLL"] > rows[0]["forget NLL"]            # GA raised the forget NLL
    figures = {p.name for p in (out / "figures").iterdir()}
    for name in ("geffect_curves", "training_stability", "sga_divergence", "ga_layer_heatmap"):
        assert {f"{name}.png", f"{name}.pdf"} <= figures, name
    for method in ("ga", "sga", "npo"):
        for record in ("train.nc", "geffect.nc", "eval.nc"):
            assert (out / "runs" / method / record).exists()
    assert "| target (before) |" in capsys.readouterr().out
