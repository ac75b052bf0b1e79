"""One flat, typed run configuration; saved as JSON beside the outputs and in every record."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunConfig:
    """Everything a run depends on. Method hyperparameters go in `hparams` (by the paper's
    symbol names, e.g. {"r": 0.5, "k": 4, "convention": "gls"} for SGA)."""

    method: str = "ga"
    hparams: dict = field(default_factory=dict)
    model: str = "tiny-llama"
    ref_model: str | None = None          # default: the initial model
    benchmark: str = "tofu"
    forget_split: str = "forget01"
    retain_split: str = "retain99"
    n_forget: int | None = None           # first N forget records (small CPU presets)
    n_retain: int | None = None
    normal_strategy: str = "retain-nearest"
    data_dir: str | None = None
    out: str = "runs/run"
    steps: int = 10
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    optimizer: str = "adamw"              # adamw | sgd
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"            # constant | linear | cosine
    max_grad_norm: float | None = None
    checkpoint_every: int = 0             # 0: only the final checkpoint
    geffect_every: int = 0                # 0: no G-effects
    probe_forget: int = 16
    probe_retain: int = 16
    eval_every: int = 0                   # 0: no evaluation during training
    eval_max_instances: int = 20
    retain_truth_ratios: str | None = None
    seed: int = 0
    dtype: str = "float32"
    loss_reduction: str = "token"         # token (HF outputs.loss, pooled) | sequence (row means)

    def __post_init__(self):
        if self.loss_reduction not in ("token", "sequence"):
            raise ValueError(f"loss_reduction must be 'token' or 'sequence', got "
                             f"{self.loss_reduction!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config has unknown keys {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
