"""Checkpoints as HF directories plus a small trainer state, written atomically.

A run directory is data, never code: the trainer state loads with `weights_only=True` (a
pickle that would run code is refused, not executed) and model weights from safetensors only.
A checkpoint replaces the previous one only after its parameters were checked finite, so the
last good checkpoint is never lost to a diverged one.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch

STATE = "trainer_state.pt"
MODEL_INFO = "geffect_model.json"      # what from_pretrained does not keep (attention kernel)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written (non-finite) or trusted (unsafe, damaged)."""


def nonfinite_parameters(model) -> list[str]:
    """Names of parameters holding a NaN or an infinity."""
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def save_checkpoint(root: Path, step: int, model, tokenizer, optimizer, scheduler, keep: int = 1) -> Path:
    """Write checkpoints/step-<step> (model, tokenizer, optimizer, scheduler) via a temp dir.

    `step` is the number of completed optimizer steps. Older checkpoints beyond `keep` go,
    but only after the new one is complete. Raises CheckpointError (writing nothing) if a
    parameter is not finite.
    """
    bad = nonfinite_parameters(model)
    if bad:
        have = checkpoints(root)
        raise CheckpointError(f"not saving step {step}: parameters {bad[:3]}{'...' if len(bad) > 3 else ''} "
                              f"are not finite; last good checkpoint: "
                              f"{have[-1] if have else 'none'}")
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    attn = getattr(model.config, "_attn_implementation", None)
    (tmp / MODEL_INFO).write_text(json.dumps({"attn_implementation": attn}))
    torch.save({"step": step, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, tmp / STATE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if re.fullmatch(r"step-\d{6}", p.name) and (p / STATE).exists()]
    return sorted(done)


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint directory holds, from its name (no file is opened)."""
    return int(path.name.split("-")[1])


def load_state(path: Path) -> dict:
    """The trainer state of a checkpoint, loaded without running any code it may hold."""
    try:
        state = torch.load(path / STATE, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"refusing {path / STATE}: not a plain tensor state (loaded with "
                              f"weights_only=True; it may be damaged or crafted): "
                              f"{str(err).splitlines()[0]}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path / STATE} holds no trainer state (expected a dict with "
                              f"'step', 'optimizer', 'scheduler')")
    return state


def attn_implementation(path: Path) -> str | None:
    """The attention implementation the checkpointed model ran with, if recorded."""
    info = Path(path) / MODEL_INFO
    if not info.exists():
        return None
    return json.loads(info.read_text()).get("attn_implementation")
