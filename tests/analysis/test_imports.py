"""analysis reads records only: importing it (every module) must not import torch."""
import subprocess
import sys


def test_analysis_never_imports_torch():
    code = ("import sys, analysis, analysis.reduce, analysis.plots, analysis.study_plots, "
            "analysis.theory, analysis.figures, analysis.records, analysis.testing, analysis.style, "
            "analysis.curves, analysis.pointwise, analysis.captions, analysis.notebooks; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
