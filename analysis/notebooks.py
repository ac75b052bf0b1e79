"""Execute the notebooks on real runs and store the executed copies, outputs included.

    python -m analysis.notebooks --runs demo_out/runs --out docs/notebooks
    python -m analysis.notebooks --runs demo_out/runs --sweep runs/sweep --out docs/notebooks

The notebooks in `notebooks/` are stored without outputs and, without runs, draw fake records
(the tests execute them so). Here each one gets its runs through a cell tagged
`injected-parameters` placed after its `parameters` cell (the papermill convention), is
executed with nbclient, and is written to `--out` with its outputs, ready for the README to
link. `training_stability` and `paper_figures` read `--runs`; `optimal_smoothing_rate` reads
`--sweep` and is skipped without one.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
INPUTS = {"training_stability": "runs", "paper_figures": "runs", "optimal_smoothing_rate": "sweep"}


def inject(nb, run_dirs: list[str]):
    """`nb` with a cell setting RUN_DIRS inserted after its `parameters` cell."""
    import nbformat

    where = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if where is None:
        raise ValueError("the notebook has no cell tagged 'parameters' to inject RUN_DIRS after")
    cell = nbformat.v4.new_code_cell(f"RUN_DIRS = {[str(d) for d in run_dirs]!r}",
                                     metadata={"tags": ["injected-parameters"]})
    cell.pop("id", None)
    nb.cells.insert(where + 1, cell)
    return nb


def execute(name: str, run_dirs: list[str | Path], out: Path, cwd: Path | None = None,
            timeout: int = 600) -> Path:
    """Run notebook `name` on `run_dirs` and write the executed copy to out/name.ipynb.

    Args:
        cwd: the kernel's working directory (default: the current one), so relative run paths
            resolve and print as given.
    """
    import nbformat
    from nbclient import NotebookClient

    if name not in INPUTS:
        raise ValueError(f"unknown notebook {name!r}; expected one of {sorted(INPUTS)}")
    missing = [str(d) for d in run_dirs if not Path(cwd or ".", d).exists()]
    if not run_dirs or missing:
        raise FileNotFoundError(f"{name}: run directories not found: {missing or 'none given'}")
    nb = inject(nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4), list(run_dirs))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(cwd or Path.cwd())}}).execute()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(prog="python -m analysis.notebooks", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=[], help="run directories or a directory of runs")
    ap.add_argument("--sweep", nargs="*", default=[], help="a sweep directory (or its runs)")
    ap.add_argument("--out", default="docs/notebooks")
    ap.add_argument("--only", nargs="*", default=list(INPUTS), choices=list(INPUTS))
    args = ap.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    written = []
    for name in args.only:
        dirs = getattr(args, INPUTS[name])
        if not dirs:
            print(f"skipped {name}: no --{INPUTS[name]} given")
            continue
        written.append(execute(name, dirs, Path(args.out)))
        print(written[-1])
    return written


if __name__ == "__main__":
    main()
