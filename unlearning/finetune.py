"""Build TOFU target and retain models on a subset (the TOFU protocol, Maini et al. 2024, Sec. 3).

The target model learns `retain[:n_retain] + forget`; the retain model learns `retain[:n_retain]`
only, so it is the "never saw the forget set" reference that forget quality compares against.
Both runs use the engine with the `sft` objective, so they are resumable and leave a training
record; the final weights are copied to `<out>/target` and `<out>/retain` as HF directories.
A finished model directory is reused, not retrained.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from .config import RunConfig
from .engine import run
from .checkpoint import checkpoints


def finetune(model: str, out: str | Path, *, forget_split: str = "forget01", retain_split: str = "retain99",
             n_retain: int = 40, epochs: int = 3, lr: float = 1e-4, batch_size: int = 8,
             max_length: int = 128, data_dir=None, which: str = "both", progress: bool = True,
             seed: int = 0) -> dict[str, Path]:
    """Fine-tune the target and/or retain model; returns {"target": dir, "retain": dir}."""
    out = Path(out)
    data = {"target": f"{retain_split}[:{n_retain}]+{forget_split}",
            "retain": f"{retain_split}[:{n_retain}]"}
    sizes = {"target": n_retain + _count(forget_split), "retain": n_retain}
    made = {}
    for role in ("target", "retain"):
        final = out / role
        if which not in ("both", role):
            continue
        if not (final / "config.json").exists():
            steps = epochs * math.ceil(sizes[role] / batch_size)
            cfg = RunConfig(method="sft", model=model, benchmark="tofu", forget_split=data[role],
                            retain_split=data["retain"], out=str(out / f"{role}-run"), steps=steps,
                            batch_size=batch_size, lr=lr, max_length=max_length, seed=seed,
                            warmup_steps=max(1, steps // 10), schedule="linear", data_dir=data_dir)
            run_dir = run(cfg, progress=progress)
            tmp = final.with_name(final.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(checkpoints(run_dir / "checkpoints")[-1], tmp)
            tmp.replace(final)
        made[role] = final
    return made


def _count(split: str) -> int:
    from .data import TOFU_QA, TOFU_N

    if split not in TOFU_QA:
        raise ValueError(f"finetune expects a TOFU forget split {sorted(s for s in TOFU_QA if s.startswith('forget'))}, got {split!r}")
    return TOFU_N * TOFU_QA[split] // 100
