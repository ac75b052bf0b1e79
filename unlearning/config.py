"""One flat, typed run configuration; saved as JSON beside the outputs and in every record.

Every field is documented in `RunConfig`'s docstring (the CLI's `--help` reads it, and a test
checks that no field goes undocumented). A config is validated when it is built, so a bad
value fails before any model or data is loaded, with a message naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine")
DTYPES = ("float32", "float64", "bfloat16", "float16")
# Fields that do not change what a run computes: a run directory may be moved (out), grown
# (steps), and checkpointed or evaluated at another rate on resume.
NOT_IDENTITY = ("out", "steps", "checkpoint_every", "eval_every", "report_to", "monitor_every")


@dataclass
class RunConfig:
    """Everything a run depends on.

    Attributes:
        method: unlearning objective, a name from `unlearning.objectives.REGISTRY`.
        hparams: the method's hyperparameters by the paper's symbol names, e.g.
            {"r": 0.5, "k": 4, "convention": "gls"} for SGA; missing ones take the method's
            defaults.
        model: policy model: tiny-llama[-tied], tiny-gpt2[-untied], smollm2-135m, a local
            Hugging Face directory or a hub id.
        ref_model: frozen reference model for methods that need one (NPO, KL terms, RMU);
            default: the initial model.
        benchmark: benchmark the forget and retain splits come from: tofu, muse_news or hp.
        forget_split: split spec of the data to forget ('split', 'benchmark:split',
            'split[:N]', joined with '+').
        retain_split: split spec of the data to keep (same syntax).
        n_forget: use only the first N forget records (default: all).
        n_retain: use only the first N retain records (default: all).
        normal_strategy: how SGA's K-1 normal samples are chosen: retain-nearest,
            retain-random, alternatives or idk.
        data_dir: benchmark data root (default: $GEFFECT_DATA_DIR or ../shared/data).
        out: run directory (records, config, checkpoints); rerunning into it resumes.
        steps: number of optimizer steps in all (a finished run may be extended).
        batch_size: forget rows per micro-batch (other splits follow the forget rows).
        grad_accum: micro-batches accumulated per optimizer step.
        max_length: tokens per encoded row (prompt + answer; answers are truncated).
        optimizer: adamw or sgd.
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        warmup_steps: linear warm-up steps before the schedule.
        schedule: learning-rate schedule after warm-up: constant, linear or cosine.
        max_grad_norm: clip the total gradient norm to this (default: no clipping).
        max_loss: stop as diverged when |loss| exceeds this (default: only NaN/inf stop).
        checkpoint_every: save a checkpoint every N steps (0: only at the end and on
            interrupt).
        geffect_every: record G-effects every N steps into geffect.nc (0: none).
        monitor_every: run the extra monitoring forward (a retain NLL for a method that reads
            no retain split) every N steps, and on G-effect and evaluation steps; NaN in
            between (0: only on G-effect and evaluation steps).
        probe_forget: forget instances in the G-effect probe set.
        probe_retain: retain instances in the G-effect probe set.
        eval_every: evaluate every N steps into eval.nc, and before the first (0: never).
        eval_max_instances: cap on every evaluated set during training.
        retain_truth_ratios: retain-model truth ratios for TOFU forget quality (.npy/.json
            file or a retain model directory).
        seed: seed of the model initialisation (tiny models), batches and sampling.
        dtype: parameter dtype: float32, float64, bfloat16 or float16.
        loss_reduction: how every objective averages token losses over a batch: token (pool
            the batch's answer tokens, as HF's outputs.loss, TOFU and open-unlearning) or
            sequence (mean over rows of each row's mean token loss).
        report_to: trackers that get live scalar curves, comma-separated: tensorboard,
            wandb, mlflow, trackio (default: none; geffect.nc stays the full record).
    """

    method: str = "ga"
    hparams: dict = field(default_factory=dict)
    model: str = "tiny-llama"
    ref_model: str | None = None
    benchmark: str = "tofu"
    forget_split: str = "forget01"
    retain_split: str = "retain99"
    n_forget: int | None = None
    n_retain: int | None = None
    normal_strategy: str = "retain-nearest"
    data_dir: str | None = None
    out: str = "runs/run"
    steps: int = 10
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256                  # TOFU's longest prompt: 240 bytes (tiny models)
    optimizer: str = "adamw"
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    max_grad_norm: float | None = None
    max_loss: float | None = None
    checkpoint_every: int = 0
    geffect_every: int = 0
    monitor_every: int = 10
    probe_forget: int = 16
    probe_retain: int = 16
    eval_every: int = 0
    eval_max_instances: int = 20
    retain_truth_ratios: str | None = None
    seed: int = 0
    dtype: str = "float32"
    report_to: str | None = None
    loss_reduction: str = "token"

    def __post_init__(self):
        validate(self)

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

    def identity(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_IDENTITY}

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


def field_docs(cls=RunConfig) -> dict[str, str]:
    """Field name -> its sentence from the class docstring's `Attributes:` section."""
    text = (cls.__doc__ or "").split("Attributes:", 1)[-1]
    docs: dict[str, str] = {}
    for m in re.finditer(r"^ {8}(\w+): (.*?)(?=^ {8}\w+: |\Z)", text, re.M | re.S):
        docs[m.group(1)] = " ".join(m.group(2).split())
    return docs


def _number(name, value, *, kind=(int,), low=None, strict=False, optional=False):
    if value is None and optional:
        return
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        what = "an integer" if kind == (int,) else "a finite number"
        bound = "" if low is None else f" {'>' if strict else '>='} {low}"
        extra = " or None" if optional else ""
        raise ValueError(f"config field {name!r} must be {what}{bound}{extra}; got {value!r}")


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"config field {name!r} must be one of {tuple(allowed)}; got {value!r}")


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ValueError naming the first field whose value a run could not use."""
    from .objectives import REGISTRY, build
    from .tasks import NORMAL_STRATEGIES

    real = (int, float)
    for name in ("steps", "warmup_steps", "checkpoint_every", "geffect_every", "eval_every",
                 "monitor_every",
                 "probe_forget", "probe_retain", "seed"):
        _number(name, getattr(cfg, name), low=0)
    for name in ("batch_size", "grad_accum", "eval_max_instances"):
        _number(name, getattr(cfg, name), low=1)
    _number("max_length", cfg.max_length, low=2)
    for name in ("n_forget", "n_retain"):
        _number(name, getattr(cfg, name), low=1, optional=True)
    _number("lr", cfg.lr, kind=real, low=0)
    _number("weight_decay", cfg.weight_decay, kind=real, low=0)
    _number("max_grad_norm", cfg.max_grad_norm, kind=real, low=0, strict=True, optional=True)
    _number("max_loss", cfg.max_loss, kind=real, low=0, strict=True, optional=True)
    if cfg.geffect_every and cfg.probe_forget + cfg.probe_retain == 0:
        raise ValueError("geffect_every > 0 needs a probe set: probe_forget or probe_retain >= 1")
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("schedule", cfg.schedule, SCHEDULES)
    _choice("dtype", cfg.dtype, DTYPES)
    _choice("loss_reduction", cfg.loss_reduction, ("token", "sequence"))
    _choice("normal_strategy", cfg.normal_strategy, NORMAL_STRATEGIES)
    _choice("benchmark", cfg.benchmark, ("tofu", "muse_news", "hp"))
    _choice("method", cfg.method, sorted(REGISTRY))
    if not isinstance(cfg.hparams, dict):
        raise ValueError(f"config field 'hparams' must be a dict; got {cfg.hparams!r}")
    for key, value in cfg.hparams.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{cfg.method} hyperparameter {key!r} must be finite; got {value}")
    build(cfg.method, **cfg.hparams)               # the method's own checks (ranges, names)
    if not isinstance(cfg.out, str) or not cfg.out.strip():
        raise ValueError(f"config field 'out' must be a directory path; got {cfg.out!r}")
    return cfg
