"""Prompt and generation settings that must match MUSE / open-unlearning / TOFU."""
from unlearning import evaluation
from unlearning.evaluation.knowmem import icl_prompt


def test_knowmem_prompt_ends_with_answer_and_a_space():
    """open-unlearning's base-model template: user_start_tag "Question: ", asst_start_tag
    "Answer: " (configs/model/Llama-2-7b-hf.yaml), joined by src/data/utils.py."""
    shots = [{"question": "Q1?", "answer": "A1."}, {"question": "Q2?", "answer": "A2."}]
    assert icl_prompt(shots, "Q3?") == ("Question: Q1?\nAnswer: A1.\n\n"
                                        "Question: Q2?\nAnswer: A2.\n\n"
                                        "Question: Q3?\nAnswer: ")


def test_tofu_generates_up_to_200_new_tokens_by_default():
    """open-unlearning configs/generation/default.yaml: max_new_tokens 200 (was 64 here)."""
    assert evaluation.TOFU_NEW_TOKENS == 200
