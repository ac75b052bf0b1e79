"""GA-vs-SGA divergence: the smoothing rate that minimises the one-step update norm.

Smoothed Gradient Ascent (SGA, arXiv:2510.22376) mixes each forget row with K-1 normal rows by
generalized label smoothing with rate r: w_f = 1 - r + r/K, w_n = r/K. With g_f the gradient of
the mean forget NLL and gbar the gradient of the mean normal-row NLL (the K-1 normal rows of a
group sum to (K-1) * gbar on average),

    gls:    grad L_SGA(r) = -(w_f g_f + (K-1) w_n gbar) = -(g_f + c (gbar - g_f)),
    split:  grad L_SGA(r) = -w_f g_f + (K-1) w_n gbar  = -(g_f - c (g_f + gbar)),

with c = r (K-1) / K. ||grad L_SGA||^2 is a quadratic in c, minimised at

    r*_gls   = K/(K-1) * (<g_f,g_f> - <g_f,gbar>) / ||g_f - gbar||^2,
    r*_split = K/(K-1) * (<g_f,g_f> + <g_f,gbar>) / ||g_f + gbar||^2.

The unconstrained minimiser is recorded (it may fall outside the convention's allowed range).
Pure numpy: works elementwise on arrays (per group) and on xarray DataArrays.
"""
from __future__ import annotations

import numpy as np

CONVENTIONS = ("gls", "split")


def _check(k, convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if np.any(np.asarray(k) < 2):
        raise ValueError(f"SGA group size K must be >= 2, got {k}")


def sga_coefficients(r, k, convention: str = "gls"):
    """(a, b) with grad L_SGA(r) = a * g_f + b * gbar."""
    _check(k, convention)
    w_f, w_n = 1.0 - r + r / k, r / k
    sign = -1.0 if convention == "gls" else 1.0
    return -w_f, sign * (k - 1) * w_n


def sga_sq_norm(r, gff, gfn, gnn, k, convention: str = "gls"):
    """||grad L_SGA(r)||^2 from the Gram entries <g_f,g_f>, <g_f,gbar>, <gbar,gbar>."""
    a, b = sga_coefficients(r, k, convention)
    return a * a * gff + 2 * a * b * gfn + b * b * gnn


def r_star(gff, gfn, gnn, k, convention: str = "gls"):
    """Smoothing rate minimising ||grad L_SGA(r)|| (closed form; see module docstring).

    Args:
        gff, gfn, gnn: <g_f,g_f>, <g_f,gbar>, <gbar,gbar> (scalars or arrays, e.g. per group).
        k: SGA group size K (one forget row plus K-1 normal rows).
        convention: "gls" or "split".

    Returns:
        r*, NaN where the denominator ||g_f -/+ gbar||^2 is 0 (the norm does not depend on r).
    """
    _check(k, convention)
    s = -1.0 if convention == "gls" else 1.0
    if not hasattr(gff, "dims"):                                    # numpy / python numbers
        gff, gfn, gnn = (np.asarray(x, dtype=float) for x in (gff, gfn, gnn))
    num = gff + s * gfn                                             # <g_f, g_f -/+ gbar>
    den = gff + 2 * s * gfn + gnn                                   # ||g_f -/+ gbar||^2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = k / (k - 1) * num / den
    if hasattr(out, "dims"):                                        # xarray
        return out.where(den != 0)
    return np.where(den == 0, np.nan, out)[()]
