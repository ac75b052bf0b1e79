"""The batched padded scorer equals a slow one-row-at-a-time loop (padding changes nothing)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from unlearning.data import encode_qa, encode_text
from unlearning.evaluation.scoring import score_qa, score_rows
from unlearning.models import tiny_model, tiny_tokenizer

from .eval_oracle import slow_row_scores

QA = [("Who wrote it?", "Someone did, long ago."), ("Q?", "A."),
      ("What is the capital of France, the country in Europe?", "Paris."),
      ("Why?", "Because the answer is rather long and has many tokens in it, more than others.")]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-tied", "tiny-gpt2", "tiny-gpt2-untied"])
def test_batched_equals_slow_loop(name):
    model, tok = tiny_model(name, seed=1, dtype=torch.float64), tiny_tokenizer()
    rows = [encode_qa(tok, q, a, max_length=512) for q, a in QA]
    sc = score_rows(model, tok, rows, batch_size=3, progress=False)
    for i, row in enumerate(rows):
        ref = slow_row_scores(model, row)
        n = len(ref["logprob"])
        assert sc.n_tokens[i] == n
        np.testing.assert_allclose(sc.logprob[i, :n], ref["logprob"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(sc.mu[i, :n], ref["mu"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(sc.sigma[i, :n], ref["sigma"], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(sc.top1[i, :n], ref["top1"])
        assert not sc.mask[i, n:].any() and (sc.logprob[i, n:] == 0).all()
        assert sc.nll[i] == pytest.approx(-ref["logprob"].mean(), abs=1e-9)


@settings(max_examples=8, deadline=None)
@given(lengths=st.lists(st.integers(2, 40), min_size=1, max_size=6),
       batch_size=st.integers(1, 4))
def test_batch_size_and_padding_do_not_change_scores(lengths, batch_size):
    model, tok = tiny_model("tiny-gpt2", seed=2, dtype=torch.float64), tiny_tokenizer()
    rows = [encode_text(tok, "abcdefghij" * 5, max_length=n) for n in lengths]
    a = score_rows(model, tok, rows, batch_size=batch_size, progress=False)
    b = score_rows(model, tok, rows, batch_size=1, progress=False)
    np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-10)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_token_budget_splits_batches_without_changing_scores():
    from unlearning.evaluation.scoring import _token_batches

    model, tok = tiny_model("tiny-gpt2", seed=2, dtype=torch.float64), tiny_tokenizer()
    rows = [encode_text(tok, "abcdefghij" * 5, max_length=n) for n in (40, 30, 12, 10, 9)]
    order = np.argsort([-len(r["input_ids"]) for r in rows], kind="stable")
    # budget 64: 40-token rows go alone (64 // 40 = 1), 30 -> 2 rows, 10 -> up to 6 (cap 4)
    sizes = [len(b) for b in _token_batches(rows, order, 4, 64)]
    assert sizes == [1, 2, 2] and sum(sizes) == len(rows)
    a = score_rows(model, tok, rows, batch_size=4, max_batch_tokens=64, progress=False)
    b = score_rows(model, tok, rows, batch_size=1, progress=False)
    np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-10)


def test_score_qa_labels_only_answer_tokens(tok):
    model = tiny_model("tiny-llama", dtype=torch.float64)
    sc = score_qa(model, tok, [("Hi?", "yes")], progress=False)
    # byte tokenizer: " yes" is 4 bytes, plus EOS -> 5 label tokens
    assert sc.n_tokens.tolist() == [5]


def test_row_without_labels_raises(tok):
    model = tiny_model("tiny-llama", dtype=torch.float64)
    sc = score_rows(model, tok, [{"input_ids": [1, 2, 3], "labels": [-100, -100, -100]}],
                    progress=False)
    with pytest.raises(ValueError, match="no label tokens"):
        sc.nll
