"""Smoothed Gradient Ascent (SGA): gradient ascent with generalized label smoothing.

SGA (arXiv:2510.22376) combines each forget sample with K-1 *normal* samples (K counts the
forget sample) and applies generalized label smoothing to GA. With smoothing rate r,
    w_f = 1 - r + r/K      (forget weight),     w_n = r/K      (each normal sample's weight).
The paper's text was not available to us and its sign convention is disputed, so both
readings are implemented and named:

    gls   (default)  L = -[w_f * ell_f + w_n * sum_k ell_k],  r <= 1.
                     r = 0 is GA; r < 0 ("negative smoothing") ascends on forget data and
                     descends on the normal samples.
    split            L = -w_f * ell_f + w_n * sum_k ell_k,     0 <= r <= 1.  r = 0 is GA.

ell is the mean token NLL of a row; the loss averages the groups' terms. Under
`loss_reduction="sequence"` the average is the plain mean over groups; under `token` (the
default) group g weighs n_g / N, n_g the answer tokens of its forget row and N those of the
batch's forget rows, so r = 0 is exactly GA's pooled (HF `outputs.loss`) form. Normal samples are chosen by the data layer
(`unlearning.data.normal_samples`), not here; their rows arrive in the `normal` split, K-1
per forget row, row j belonging to forget row j // (K-1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Loss, Outputs, register

CONVENTIONS = ("gls", "split")


def sga_weights(r: float, k: int) -> tuple[float, float]:
    """(w_f, w_n) of generalized label smoothing with rate r over groups of K samples."""
    return 1.0 - r + r / k, r / k


@register("sga")
@dataclass(frozen=True)
class SGA:
    r: float = 0.5
    k: int = 4
    convention: str = "gls"

    splits: ClassVar[tuple[str, ...]] = ("forget", "normal")
    needs_ref: ClassVar[bool] = False

    def __post_init__(self):
        if self.convention not in CONVENTIONS:
            raise ValueError(f"SGA convention must be one of {CONVENTIONS}, got {self.convention!r}")
        if self.k < 2:
            raise ValueError(f"SGA group size K must be >= 2 (one forget + K-1 normal), got {self.k}")
        if self.r > 1 or (self.convention == "split" and self.r < 0):
            allowed = "r <= 1" if self.convention == "gls" else "0 <= r <= 1"
            raise ValueError(f"SGA {self.convention} needs {allowed}, got r={self.r}")

    def __call__(self, out: Outputs) -> Loss:
        ell_f = out["forget"].nll                                   # (B,)
        ell_n = out["normal"].nll                                   # (B*(K-1),)
        b = ell_f.shape[0]
        if ell_n.shape[0] != b * (self.k - 1):
            raise ValueError(f"SGA with K={self.k} expects {self.k - 1} normal rows per forget "
                             f"row ({b * (self.k - 1)} in all), got {ell_n.shape[0]}")
        normal_sum = ell_n.view(b, self.k - 1).sum(-1)              # (B,)
        w_f, w_n = sga_weights(self.r, self.k)
        sign = -1.0 if self.convention == "gls" else 1.0
        per_group = -w_f * ell_f + sign * w_n * normal_sum          # (B,)
        f = out["forget"]
        if f.reduction == "sequence":
            total = per_group.mean()
        else:   # sum_g (n_g / N) per_group_g, written so that r = 0 is GA's value bit for bit
            n = f.mask.sum(-1)                                      # (B,)
            total = -w_f * f.batch_nll + sign * w_n * (normal_sum * n).sum() / n.sum()
        w = f.weights                                               # (B,) n_g / N or 1 / B
        return Loss(total=total, terms={"forget_nll": ell_f.mean(), "normal_nll": ell_n.mean()},
                    weights={"forget": w, "normal": w.repeat_interleave(self.k - 1)})
