"""G-effects where researchers already train: a `transformers.Trainer` mixin, and scalar
summaries of G-effect records sent to experiment trackers (TensorBoard, W&B, MLflow, Trackio)."""
from .report import Reporter, scalars, train_scalars
from .trainer import GEffectsMixin

__all__ = ["GEffectsMixin", "Reporter", "scalars", "train_scalars"]
