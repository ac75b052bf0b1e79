"""Batched left-padded greedy generation equals generating each prompt alone."""
import numpy as np
import pytest
import torch

from unlearning.evaluation.generation import _batches, cut_at_stop, generate
from unlearning.models import tiny_model

PROMPTS = ["Question: Who?\nAnswer:", "Q\nA:", "Question: a much longer prompt than the others\nAnswer:",
           "x"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_batched_generation_matches_one_at_a_time(tok, name, dtype):
    # float32 batches are left-padded; float64 batches group equal lengths (see _batches)
    model = tiny_model(name, seed=3, dtype=dtype)
    batched = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=4, progress=False)
    alone = [generate(model, tok, [p], max_new_tokens=12, batch_size=1, progress=False)[0]
             for p in PROMPTS]
    assert batched == alone
    assert all(batched)                                  # no empty (NaN -> pad) generations
    assert tok.padding_side == "right" and tok.truncation_side == "right"   # restored


def test_max_prompt_tokens_keeps_the_end(tok):
    model = tiny_model("tiny-llama", seed=3, dtype=torch.float64)
    long = "z" * 100 + "Question: Who?\nAnswer:"
    short = "Question: Who?\nAnswer:"
    a = generate(model, tok, [long], max_new_tokens=6, max_prompt_tokens=len(short),
                 progress=False)
    b = generate(model, tok, [short], max_new_tokens=6, progress=False)
    assert a == b


def test_cut_at_stop():
    assert cut_at_stop(" Paris.\n\nQuestion: next", ("\n\n", "Question:")) == "Paris."
    assert cut_at_stop("abc Question: x", ("\n\n", "Question:")) == "abc"
    assert cut_at_stop(" plain ", ()) == "plain"


def test_batches_cover_every_prompt_once():
    lengths = [5, 3, 5, 7, 3, 3, 5]
    mixed = _batches(lengths, 3, equal_length=False)
    same = _batches(lengths, 2, equal_length=True)
    for batches in (mixed, same):
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert all(len({lengths[i] for i in b}) == 1 and len(b) <= 2 for b in same)
    assert max(len(b) for b in mixed) == 3
