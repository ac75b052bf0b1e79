"""Shared helpers for the geffect tests: tiny float64 models and padded QA-like batches."""
from __future__ import annotations

import pytest
import torch

from unlearning.models import tiny_model

PAD = 256
MODELS = ("tiny-llama", "tiny-llama-tied", "tiny-gpt2", "tiny-gpt2-untied")


def make_batch(n: int, t: int = 9, *, seed: int = 0, prefix: str = "x",
               min_len: int = 5) -> dict:
    """n right-padded rows: a prompt (masked) then answer tokens; lengths vary (padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, t), PAD, dtype=torch.long)                 # (n, t)
    mask = torch.zeros(n, t, dtype=torch.long)                      # (n, t)
    labels = torch.full((n, t), -100, dtype=torch.long)             # (n, t)
    for i in range(n):
        length = int(torch.randint(min_len, t + 1, (1,), generator=g))
        prompt = int(torch.randint(1, length - 2, (1,), generator=g))
        row = torch.randint(0, 256, (length,), generator=g)
        ids[i, :length], mask[i, :length] = row, 1
        labels[i, prompt:length] = row[prompt:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "instance_id": [f"{prefix}{i}" for i in range(n)]}


@pytest.fixture
def model64(request):
    name = getattr(request, "param", "tiny-llama")
    return tiny_model(name, seed=1, dtype=torch.float64)


def _rmsnorm_in_input_dtype(self, hidden_states):
    """LlamaRMSNorm without the float32 round trip (HF casts float64 inputs down to float32,
    which leaves float32 noise in a "float64" model and breaks 1e-10 comparisons)."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)                    # (B, T, 1)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@pytest.fixture(autouse=True)
def exact_rmsnorm(monkeypatch):
    """Patch LlamaRMSNorm to stay in float64, and register the patched forward (still
    y = weight * xhat) for the norm kernel: a patched forward is otherwise measured by the
    torch.func fallback, as any forward the kernels were not derived for."""
    from transformers.models.llama import modeling_llama

    from geffect import kernels

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", _rmsnorm_in_input_dtype)
    monkeypatch.setattr(kernels, "REGISTRY", dict(kernels.REGISTRY))
    kernels.register(_rmsnorm_in_input_dtype, "norm")
