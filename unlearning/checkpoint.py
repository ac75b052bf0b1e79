"""Checkpoints as HF directories plus a small trainer state, written atomically."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

STATE = "trainer_state.pt"


def save_checkpoint(root: Path, step: int, model, tokenizer, optimizer, scheduler, keep: int = 1) -> Path:
    """Write checkpoints/step-<step> (model, tokenizer, optimizer, scheduler) via a temp dir.

    `step` is the number of completed optimizer steps. Older checkpoints beyond `keep` go.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
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


def load_state(path: Path) -> dict:
    return torch.load(path / STATE, weights_only=False)
