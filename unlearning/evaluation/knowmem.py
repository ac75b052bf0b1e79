"""MUSE KnowMem: answer questions after in-context examples; ROUGE-L vs the gold answer.

Shi et al. 2024, MUSE (arXiv:2407.06460), Sec. 3 "C2. No knowledge memorization": the prompt is
the split's in-context QA pairs, "Question: {q}\\nAnswer: {a}\\n\\n" each, then
"Question: {q}\\nAnswer: " with the trailing space that MUSE and open-unlearning use
(open-unlearning `src/data/utils.py::preprocess_chat_instance` with the base-model template
`asst_start_tag: "Answer: "`, `configs/model/Llama-2-7b-hf.yaml`); the greedy answer (32 new tokens) is cut at "\\n\\n" / "Question:".
The prompt is plain text for every model (MUSE evaluates base models; no chat template).
Models with a short position table see only the LAST prompt tokens that fit, which drops the
earliest in-context examples.
"""
from __future__ import annotations

from ..data import load_split
from . import stats
from .generation import generate
from .record import Part
from .scoring import max_positions

STOP = ("\n\n", "\nQuestion", "Question:")


def icl_prompt(examples: list[dict], question: str) -> str:
    """MUSE's few-shot prompt: the in-context QA pairs, then the question."""
    shots = "".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n" for e in examples)
    return f"{shots}Question: {question}\nAnswer: "


def knowmem(model, tokenizer, benchmark: str, which: str, *, data_dir, max_instances,
            batch_size: int, max_new_tokens: int, progress: bool) -> Part:
    """Per-instance ROUGE-L (recall and F1) on `knowmem_<which>_qa` of a benchmark."""
    recs = load_split(benchmark, f"knowmem_{which}_qa", data_dir)[: max_instances or None]
    icl = load_split(benchmark, f"knowmem_{which}_qa_icl", data_dir)
    prompts = [icl_prompt(icl, r["question"]) for r in recs]
    gens = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, stop=STOP, progress=progress,
                    max_prompt_tokens=max_positions(model) - max_new_tokens,
                    desc=f"{benchmark} knowmem {which}")
    recall, f1 = stats.rouge_l(gens, [str(r["answer"]) for r in recs])
    return Part(f"knowmem_{which}", [r["instance_id"] for r in recs],
                {"rouge_l": recall, "rouge_l_f1": f1})
