"""Unlearning evaluation: TOFU, MUSE-News, Harry-Potter and a utility guard, per instance.

One public verb, `evaluate(model, tokenizer, benchmark, ...) -> xr.Dataset`; the record layout
is documented in `record.py`, every metric's formula / averaging / citation in
`definitions.py` (and in each record's `definitions` attr). `summary_json(ds)` gives the
open-unlearning-compatible summary; `tofu_truth_ratios` computes (for caching) the retain
model's truth ratios that TOFU forget quality needs.
"""
from __future__ import annotations

import time

import numpy as np
import xarray as xr

from .record import build_record, summary_json
from .tofu import FORGET_SPLITS, tofu_truth_ratios
from .utility import UTILITY_SETS

__all__ = ["evaluate", "summary_json", "tofu_truth_ratios", "BENCHMARKS"]

BENCHMARKS = ("tofu", "muse_news", "hp", "utility")
# open-unlearning configs/generation/default.yaml (max_new_tokens: 200); TOFU's config/eval.yaml
# caps prompt + answer at max_length: 200 instead.
TOFU_NEW_TOKENS = 200


def _check(benchmark: str, forget_split: str) -> None:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    if benchmark == "tofu" and forget_split not in FORGET_SPLITS:
        raise ValueError(f"unknown TOFU forget split {forget_split!r}; expected one of "
                         f"{FORGET_SPLITS}")


def evaluate(model, tokenizer, benchmark: str, *, forget_split: str = "forget05", data_dir=None,
             max_instances: int | None = None, batch_size: int = 8,
             max_new_tokens: int | None = None, retain_truth_ratios=None,
             retain_auc: float | None = None, max_length: int = 256,
             utility_set: str | None = None, step: int = 0, truth_ratio: str = "geometric",
             mia_max_length: int = 2048, progress: bool = True) -> xr.Dataset:
    """Evaluate a model on one benchmark; every metric per instance plus a summary table.

    Args:
        model: causal LM (used in its own dtype; fp32 on CPU); put in eval mode here, and its
            previous mode restored afterwards.
        tokenizer: its tokenizer (chat template used for TOFU prompts when it has one).
        benchmark: "tofu", "muse_news", "hp" or "utility".
        forget_split: TOFU forget01/05/10 (other benchmarks ignore it).
        data_dir: data root (default: the data layer's).
        max_instances: cap on every evaluated set (rows / windows).
        max_new_tokens: generation length; default per metric (TOFU 200, MUSE VerbMem 128,
            KnowMem 32).
        retain_truth_ratios: TOFU forget quality's retain-model truth ratios: an array, a
            .npy / .json file (from `tofu_truth_ratios`), or a retain model directory; without
            it forget_quality is NaN and the record's notes say why.
        retain_auc: the retain model's Min-K% AUC (this module's orientation: forget = label
            0, 1 = memorised) for PrivLeak (default 0.5, noted).
        max_length: tokens per text window (HP corpora, MUSE retain perplexity, utility guard).
        truth_ratio: "geometric" (default; TOFU's and open-unlearning's code) or
            "arithmetic" (the TOFU paper's Eq. 2) mean over perturbed answers; stored in the
            record's attr `truth_ratio_mean`.
        mia_max_length: tokens of each MUSE PrivLeak article scored for MIA / PrivLeak
            (open-unlearning's 2,048; capped by the model's position table).
        utility_set: for benchmark "utility": "tofu" (default), "muse_news" or "hp".
        step: the training step this evaluation belongs to (the record's `step` coordinate).
        progress: show tqdm bars.

    Returns:
        The evaluation record (layout in `record.py`).
    """
    _check(benchmark, forget_split)
    if truth_ratio not in ("geometric", "arithmetic"):
        raise ValueError(f"truth_ratio must be 'geometric' or 'arithmetic', got {truth_ratio!r}")
    from . import hp, muse, tofu, utility

    was_training = model.training
    model.eval()
    start = time.perf_counter()
    common = dict(data_dir=data_dir, max_instances=max_instances, batch_size=batch_size,
                  progress=progress)
    try:
        if benchmark == "tofu":
            parts, summary, notes = tofu.evaluate_tofu(
                model, tokenizer, forget_split=forget_split, retain_auc=retain_auc,
                max_new_tokens=max_new_tokens or TOFU_NEW_TOKENS,
                retain_truth_ratios=retain_truth_ratios, truth_ratio=truth_ratio, **common)
        elif benchmark == "muse_news":
            parts, summary, notes = muse.evaluate_muse(
                model, tokenizer, max_new_tokens=max_new_tokens, max_length=max_length,
                retain_auc=retain_auc, mia_max_length=mia_max_length, **common)
        elif benchmark == "hp":
            parts, summary, notes = hp.evaluate_hp(
                model, tokenizer, max_new_tokens=max_new_tokens, max_length=max_length, **common)
        else:
            parts, summary, notes = utility.evaluate_utility(
                model, tokenizer, utility_set=utility_set or "tofu", max_length=max_length,
                **common)
    finally:
        model.train(was_training)
    settings = {"max_instances": max_instances, "batch_size": batch_size,
                "max_new_tokens": max_new_tokens, "max_length": max_length,
                "mia_max_length": mia_max_length, "truth_ratio_mean": truth_ratio,
                "dtype": str(next(model.parameters()).dtype),
                "seconds": round(time.perf_counter() - start, 2)}
    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    ds = build_record(parts, summary, benchmark=benchmark, model_name=str(name), step=step,
                      notes=notes, settings=settings,
                      forget_split=forget_split if benchmark == "tofu" else "")
    ds.attrs["truth_ratio_mean"] = truth_ratio
    return ds


def _writable(out) -> None:
    """Fail before any model is loaded when `out` cannot take the evaluation's files."""
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".geffect-write-test"
    probe.write_text("")
    probe.unlink()


def run_eval(model_name: str, benchmarks, out, **kw) -> dict:
    """`geffect eval`: evaluate one model on each benchmark, writing each as it finishes.

    One benchmark writes `out/eval.nc` and `out/eval_summary.json`; several write
    `eval-<benchmark>.nc` and `eval_summary-<benchmark>.json` each, so a later failure never
    loses a finished part. Benchmarks and `out` are checked before the model is loaded.
    Returns the last benchmark's summary.
    """
    import json
    from pathlib import Path

    from ..engine import save_eval
    from ..models import load_model

    benchmarks = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    for b in benchmarks:
        _check(b, kw.get("forget_split", "forget05") if b == "tofu" else "forget05")
    out = Path(out)
    _writable(out)
    model, tok = load_model(model_name)
    summary: dict = {}
    for b in benchmarks:
        ds = evaluate(model, tok, b, **kw)
        tag = "" if len(benchmarks) == 1 else f"-{b}"
        save_eval(ds, out / f"eval{tag}.nc", append=False)
        summary = summary_json(ds)
        (out / f"eval_summary{tag}.json").write_text(json.dumps(summary, indent=1))
    return summary
