"""A Trainer that runs a registered geffect objective on the engine's exact batches.

The oracle for the integration: `geffect unlearn` (the engine) on the same objective, data
order, seed and probes must write the same `geffect.nc`.
"""
from __future__ import annotations

import torch
from transformers import Trainer, TrainingArguments

from unlearning import engine
from unlearning.config import RunConfig
from unlearning.integrations import GEffectsMixin
from unlearning.models import load_model
from unlearning.objectives import build
from unlearning.tasks import build_task


class StepBatches(torch.utils.data.Dataset):
    """Item j is the engine's micro-batch j: `task.batch(j, ...)` (per-split batch dicts)."""

    def __init__(self, task, splits, batch_size: int, seed: int, n: int):
        self.task, self.splits, self.size, self.seed, self.n = task, splits, batch_size, seed, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j: int) -> dict:
        return self.task.batch(j, self.size, self.splits, self.seed)


class ObjectiveTrainer(Trainer):
    """compute_loss = a registered objective on the engine's forward, as a user would write it,
    under the run's `loss_reduction`."""

    def __init__(self, *args, objective, loss_reduction: str = "token", **kwargs):
        super().__init__(*args, **kwargs)
        self.objective, self.loss_reduction = objective, loss_reduction
        self.last_loss = None                             # the objective's Loss (its weights)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outs = {s: engine.split_outputs(model, inputs[s], reduction=self.loss_reduction)
                for s in self.objective.splits}
        self.last_loss = self.objective(outs)
        self.rank_scale = self._rank_scale(inputs)
        return self.last_loss.total * self.rank_scale

    def _rank_scale(self, inputs) -> float:
        """Under DDP with loss_reduction "token": world * N_r / N, N_r this rank's forget
        answer tokens and N all ranks' (HF's `num_items_in_batch` idea), so the average over
        ranks that DDP forms is the loss pooled over the whole batch, as one process pools it.
        GA and SGA only: their row weights pool the forget rows' answer tokens. 1 otherwise
        (row means average exactly when every rank holds as many rows)."""
        world = self.accelerator.num_processes
        if world == 1 or self.loss_reduction != "token":
            return 1.0
        if self.objective.name not in ("ga", "sga"):
            raise NotImplementedError(f"{self.objective.name}: token pooling over ranks is "
                                      f"written for GA and SGA only")
        import torch.distributed as dist

        n = (inputs["forget"]["labels"][:, 1:] != -100).sum().to(torch.float64)  # N_r
        total = n.clone()
        dist.all_reduce(total)                                                  # N
        return float(world * n / total)


class ObjectiveTrainerG(GEffectsMixin, ObjectiveTrainer):
    def geffect_sample_ids(self, inputs):
        return engine.sample_ids(self.objective, inputs)

    def geffect_sample_weights(self, inputs):
        return [w * self.rank_scale for w in engine.sample_weights(self.objective, [self.last_loss])]

    def geffect_divergence(self, inputs):
        if "normal" not in self.objective.splits:
            return None
        return {"forget": inputs["forget"], "normal": inputs["normal"],
                "sga": {"k": self.objective.k, "convention": self.objective.convention,
                        "loss_reduction": self.loss_reduction}}


def trainer_for(cfg: RunConfig, out, report_to="none", world: int = 1,
                **geffect_kw) -> ObjectiveTrainerG:
    """A Trainer with G-effects that reproduces `engine.run(cfg)` (SGD, constant lr).

    world > 1 (run under `torch.distributed.run`, DDP on CPU with gloo): each item holds
    batch_size / world rows, so rank r's micro-batch is the r-th slice of the engine's.
    """
    if cfg.optimizer != "sgd" or cfg.schedule != "constant" or cfg.max_grad_norm:
        raise ValueError("trainer_for reproduces SGD, constant lr, no clipping only")
    model, tok = load_model(cfg.model, dtype=getattr(torch, cfg.dtype), seed=cfg.seed)
    objective = build(cfg.method, **cfg.hparams)
    task = build_task(tok, cfg.benchmark, cfg.forget_split, cfg.retain_split,
                      n_forget=cfg.n_forget, n_retain=cfg.n_retain,
                      k=getattr(objective, "k", 0) if "normal" in objective.splits else 0,
                      normal_strategy=cfg.normal_strategy, max_length=cfg.max_length,
                      seed=cfg.seed, data_dir=cfg.data_dir)
    args = TrainingArguments(                            # item order = the engine's batch order
        output_dir=str(out), per_device_train_batch_size=1, train_sampling_strategy="sequential",
        gradient_accumulation_steps=cfg.grad_accum, max_steps=cfg.steps, learning_rate=cfg.lr,
        optim="sgd", lr_scheduler_type="constant", weight_decay=cfg.weight_decay,
        max_grad_norm=0.0, report_to=report_to, use_cpu=True, seed=cfg.seed,
        ddp_backend="gloo" if world > 1 else None, remove_unused_columns=False,
        save_strategy="no", logging_steps=1, disable_tqdm=True)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {world} ranks")
    data = StepBatches(task, objective.splits, cfg.batch_size // world, cfg.seed,
                       cfg.steps * cfg.grad_accum * world)
    return ObjectiveTrainerG(model=model, args=args, train_dataset=data, objective=objective,
                             data_collator=lambda items: items[0],
                             loss_reduction=cfg.loss_reduction,
                             geffect_reduction=engine.RISK[cfg.loss_reduction],
                             geffect_probes=engine._probes(task, cfg),
                             geffect_every=cfg.geffect_every, **geffect_kw)
