"""Fixtures for the evaluation tests."""
import pytest
import torch

from unlearning.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def model64():
    return tiny_model("tiny-llama", seed=0, dtype=torch.float64)
