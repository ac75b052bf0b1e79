"""One style for every figure: colours, sizes, ticks, legends and saving.

* A colour per method, fixed across figures and colour-blind-safe: the Okabe-Ito palette
  (Okabe & Ito 2008, "Color Universal Design") for the common methods, Paul Tol's "muted"
  scheme (Tol 2021, "Colour Schemes", SRON/EPS/TN/09-002) for the rest; several runs of one
  method (a sweep over SGA's r) get shades of the method's colour, ordered by r, and SGA's
  `split` convention is dashed.
* Sizes for a one-column (3.3 in) and a two-column (6.8 in) paper figure; `paper()` sets
  8 pt fonts and 300 dpi; `save` writes PDF (vector) and PNG (300 dpi).
* Integer ticks on every optimizer-step axis; legends outside the data.
"""
from __future__ import annotations

import json
import re
import zlib
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ONE_COLUMN, TWO_COLUMN = 3.3, 6.8                                  # inches
WIDTHS = {"one": ONE_COLUMN, "two": TWO_COLUMN}
DPI = 300
FORMATS = ("pdf", "png")

METHOD_COLORS = {                                                  # Okabe-Ito, then Tol muted
    "ga": "#0072B2", "sga": "#D55E00", "npo": "#009E73", "graddiff": "#E69F00",
    "wga": "#CC79A7", "tnpo": "#56B4E9", "simnpo": "#000000",
    "wtnpo": "#44AA99", "idkpo": "#882255", "idkdpo": "#332288", "rmu": "#999933",
    "ngdiff": "#AA4499", "sft": "#777777",
}
SPARE_COLORS = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677",
                "#882255", "#AA4499")                              # Tol muted
BAND_COLORS = {"embed": "#999999", "shallow": "#56B4E9", "middle": "#009E73",
               "deep": "#D55E00", "lm": "#000000"}
BAND_STYLES = {"embed": ":", "lm": "--"}
PROBE_COLORS = {"forget": "#D55E00", "retain": "#0072B2"}

RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
      "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.3,
      "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
      "savefig.dpi": DPI, "figure.dpi": 100, "pdf.fonttype": 42, "ps.fonttype": 42}


@contextmanager
def paper() -> Iterator[None]:
    """rcParams of a paper figure (8 pt text, 300 dpi, TrueType fonts in PDF)."""
    with mpl.rc_context(RC):
        yield


def method_color(method: str) -> str:
    """The fixed colour of a method; unknown names get a stable colour from their name."""
    key = str(method).lower()
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    return SPARE_COLORS[zlib.crc32(key.encode()) % len(SPARE_COLORS)]


def shade(color: str, t: float) -> str:
    """`color` darkened (t < 0) or lightened (t > 0) by |t| in [0, 1]."""
    rgb = np.array(to_rgb(color))
    target = np.ones(3) if t > 0 else np.zeros(3)
    return to_hex(rgb + abs(t) * (target - rgb))


def run_styles(ds: xr.Dataset | xr.DataArray) -> dict[str, dict]:
    """Run name -> plot style (color, ls) for a record combined along `run`.

    A method with one run gets its colour; a method with several runs gets shades of it from
    dark to light in the order of `smoothing_rate` (then name). SGA's `split` runs are dashed.
    """
    if "run" not in ds.dims:
        method = str(ds.attrs.get("method", "")) or _json_method(ds)
        return {"": {"color": method_color(method), "ls": "-"}}
    names = [str(n) for n in ds["run"].values]
    methods = ([str(m) for m in ds["method"].values] if "method" in ds.coords else names)
    rates = (np.asarray(ds["smoothing_rate"].values, float) if "smoothing_rate" in ds.coords
             else np.full(len(names), np.nan))
    convs = [str(c) for c in ds["convention"].values] if "convention" in ds.coords else [""] * len(names)
    out = {}
    for m in set(methods):
        idx = sorted((i for i in range(len(names)) if methods[i] == m),
                     key=lambda i: (np.nan_to_num(rates[i], nan=-1e9), names[i]))
        ts = np.linspace(-0.45, 0.55, len(idx)) if len(idx) > 1 else [0.0]
        for i, t in zip(idx, ts):
            out[names[i]] = {"color": shade(method_color(m), float(t)),
                             "ls": "--" if convs[i] == "split" else "-"}
    return out


def _json_method(ds) -> str:
    try:
        return str(json.loads(ds.attrs.get("config", "{}")).get("method", ""))
    except ValueError:
        return ""


def finite(x, *ys) -> tuple[np.ndarray, ...]:
    """x and ys at the points where every y is finite: records of runs combined along `run`
    share one step axis, so a run measured every 2nd step is NaN between, which would leave a
    line with no two neighbouring points (nothing drawn)."""
    ok = np.all([np.isfinite(np.asarray(y, dtype=float)) for y in ys], axis=0)
    return (np.asarray(x)[ok], *(np.asarray(y)[ok] for y in ys))


def step_axis(ax: Axes, axis: str = "x") -> Axes:
    """Integer ticks on an optimizer-step axis."""
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))
    return ax


def legend_outside(ax: Axes, ncols: int = 1) -> None:
    """The axes' legend to the right of its data area, never on it."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, ncols=ncols, frameon=False)


def figure_legend(fig: Figure, where: str = "outside lower center") -> None:
    """One legend for the whole figure (unique labels of all axes), outside every axes."""
    seen: dict[str, object] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if seen:
        fig.legend(list(seen.values()), list(seen), loc=where, ncols=min(len(seen), 4),
                   frameon=False)


def figure(width: str = "two", nrows: int = 1, ncols: int = 1, row_height: float = 2.3,
           **kw) -> tuple[Figure, np.ndarray]:
    """A paper-sized `Figure` (no pyplot state) and its (nrows, ncols) axes.

    Args:
        width: "one" (3.3 in, one column) or "two" (6.8 in, both columns).
        row_height: inches per row of axes.
    """
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {sorted(WIDTHS)}, got {width!r}")
    fig = Figure(figsize=(WIDTHS[width], row_height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def save(fig: Figure, out: Path, name: str) -> list[Path]:
    """`fig` as out/name.pdf (vector) and out/name.png (300 dpi); returns the two paths."""
    stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
    paths = []
    for fmt in FORMATS:
        path = Path(out) / f"{stem}.{fmt}"
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths
