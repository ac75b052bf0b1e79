"""Benchmark data offline: TOFU, MUSE-News and Harry-Potter substitutes, encoded per split.

Data are read from a local directory (`GEFFECT_DATA_DIR`, default `../shared/data` beside the
repository when present; each folder's SOURCE.md gives origin and format), else from the
Hugging Face hub (`locuslab/TOFU`, `muse-bench/MUSE-News`) where that is reachable.

Every record carries a stable `instance_id`, so per-instance G-effects and metrics join:
    tofu/<i>                  i = index in TOFU `full` (forget/retain/perturbed splits share it)
    tofu-real_authors/<i>, tofu-world_facts/<i>, tofu-holdout/<i>, tofu-idk/<i>
    <benchmark>-<split>/<i>   everything else (MUSE, HP)

QA examples use the tokenizer's chat template when it has one, else the plain template
"Question: {q}\nAnswer: {a}"; labels mask the prompt tokens (-100).
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

TOFU_N = 4000
TOFU_QA = {f"forget{p:02d}": p for p in (1, 5, 10)} | {f"retain{100 - p}": p for p in (1, 5, 10)}
TOFU_FILES = ["full", *TOFU_QA, *(f"forget{p:02d}_perturbed" for p in (1, 5, 10)),
              "retain_perturbed", "real_authors", "real_authors_perturbed", "world_facts",
              "world_facts_perturbed", "holdout01", "holdout05", "holdout10"]
# split -> (relative path, format): "json" a JSON list, "jsonl" lines, "txt" one text a line
MUSE_NEWS = {
    "knowmem_forget_qa": "knowmem/forget_qa.json", "knowmem_retain_qa": "knowmem/retain_qa.json",
    "knowmem_forget_qa_icl": "knowmem/forget_qa_icl.json",
    "knowmem_retain_qa_icl": "knowmem/retain_qa_icl.json",
    "verbmem_forget": "verbmem/forget.json", "privleak_forget": "privleak/forget.json",
    "privleak_retain": "privleak/retain.json", "privleak_holdout": "privleak/holdout.json",
    "raw_forget": "raw/forget.json", "sust_forget_2": "sust/forget_2.json",
    "sust_forget_3": "sust/forget_3.json", "sust_forget_4": "sust/forget_4.json",
}
HP = {
    "knowmem_forget_qa": "muse_books_knowmem/forget_qa.json",
    "knowmem_retain_qa": "muse_books_knowmem/retain_qa.json",
    "knowmem_forget_qa_icl": "muse_books_knowmem/forget_qa_icl.json",
    "knowmem_retain_qa_icl": "muse_books_knowmem/retain_qa_icl.json",
    "wiki_retain1": "muse_books_wiki/retain1.json", "wiki_retain2": "muse_books_wiki/retain2.json",
    "wikipedia": "wikipedia/hp_wikipedia_summaries.txt",
}
BENCHMARKS = {"tofu": {s: f"{s}.json" for s in TOFU_FILES} | {"idk": "idontknow.jsonl"},
              "muse_news": MUSE_NEWS, "hp": HP}
HUB = {"tofu": "locuslab/TOFU", "muse_news": "muse-bench/MUSE-News"}


def data_dir(override: str | os.PathLike | None = None) -> Path | None:
    """The local data root: the argument, $GEFFECT_DATA_DIR, or ../shared/data if present."""
    if override is not None or os.environ.get("GEFFECT_DATA_DIR"):
        path = Path(override or os.environ["GEFFECT_DATA_DIR"])
        if not path.is_dir():
            raise FileNotFoundError(f"data directory {path} does not exist; expected a folder "
                                    f"holding tofu/, muse_news/, hp/ (see their SOURCE.md)")
        return path
    for cand in (Path.cwd() / ".." / "shared" / "data",
                 Path(__file__).resolve().parents[2] / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    return None


def _read(path: Path, fmt_hint: str) -> list:
    if path.suffix == ".txt":
        return [line for line in path.read_text().splitlines() if line.strip()]
    text = path.read_text()
    if path.name == "idontknow.jsonl":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]   # JSON Lines


def _tofu_ids(split: str, n: int) -> list[str]:
    """Stable ids: TOFU QA splits are slices of `full`, so they share its index."""
    if split in TOFU_QA or split.startswith("forget") or split == "retain_perturbed":
        base = split.split("_")[0]
        start = TOFU_N - n if base.startswith("forget") else 0
        return [f"tofu/{start + i}" for i in range(n)]
    if split == "full" or split.startswith("retain"):
        return [f"tofu/{i}" for i in range(n)]
    family = split.replace("_perturbed", "").rstrip("0123456789")
    return [f"tofu-{family}/{i}" for i in range(n)]


def _from_hub(benchmark: str, split: str) -> list:
    if benchmark not in HUB:
        raise FileNotFoundError(f"no local data for {benchmark!r} and no hub copy is known")
    # TOFU's hub configs are the split names; MUSE-News has config "knowmem" with split
    # "forget_qa" etc., which our names join with "_".
    config, hub_split = (split, "train") if benchmark == "tofu" else split.split("_", 1)
    try:
        from datasets import load_dataset
        return list(load_dataset(HUB[benchmark], config, split=hub_split))
    except Exception as err:  # the hub is unreachable here; say what to do instead
        raise FileNotFoundError(
            f"{benchmark}/{split}: no local data directory (set GEFFECT_DATA_DIR or place "
            f"../shared/data beside the repository) and the hub copy {HUB[benchmark]!r} could "
            f"not be loaded: {err}") from err


def load_split(benchmark: str, split: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Raw records of one split, each a dict with a stable `instance_id`.

    Text corpora come back as {"text": ...}; "I don't know" lines as {"answer": ...}.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {sorted(BENCHMARKS)}")
    if split not in BENCHMARKS[benchmark]:
        raise ValueError(f"unknown {benchmark} split {split!r}; expected one of "
                         f"{sorted(BENCHMARKS[benchmark])}")
    root = globals()["data_dir"](data_dir)
    if root is None:
        items = _from_hub(benchmark, split)
    else:
        path = root / benchmark / BENCHMARKS[benchmark][split]
        if not path.exists():
            raise FileNotFoundError(f"{benchmark}/{split}: expected {path}; not found "
                                    f"(is {root} the data directory?)")
        items = _read(path, path.suffix)
    records = [it if isinstance(it, dict) else
               ({"answer": it} if split == "idk" else {"text": it}) for it in items]
    ids = (_tofu_ids(split, len(records)) if benchmark == "tofu" and split != "idk"
           else [f"{benchmark}-{split}/{i}" for i in range(len(records))])
    return [{**r, "instance_id": i} for r, i in zip(records, ids)]


# ---- encoding ---------------------------------------------------------------------------

def prompt_text(tokenizer, question: str) -> str:
    """The text a QA answer follows: the chat template's user turn, or "Question: ...\\nAnswer:"."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                             tokenize=False, add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def encode_qa(tokenizer, question: str, answer: str, max_length: int = 128) -> dict:
    """One row: prompt and answer ids, labels = answer ids (+ EOS), prompt masked with -100.

    Prompt and answer are tokenized separately and concatenated, so the label boundary never
    moves with a merge across it.
    """
    templated = bool(getattr(tokenizer, "chat_template", None))
    prompt = tokenizer(prompt_text(tokenizer, question), add_special_tokens=not templated).input_ids
    ans = tokenizer(answer if templated else " " + answer, add_special_tokens=False).input_ids
    ans = ans + [tokenizer.eos_token_id]
    if len(prompt) >= max_length:
        raise ValueError(f"prompt of {len(prompt)} tokens leaves no room for the answer within "
                         f"max_length={max_length}; raise max_length")
    ids = (prompt + ans)[:max_length]
    labels = ([-100] * len(prompt) + ans)[:max_length]
    return {"input_ids": ids, "labels": labels}


def encode_text(tokenizer, text: str, max_length: int = 128) -> dict:
    """A raw-text row (MUSE/HP corpora): every token is a label, truncated to max_length."""
    ids = tokenizer(text, add_special_tokens=True).input_ids[:max_length]
    return {"input_ids": ids, "labels": list(ids)}


def encode(tokenizer, record: dict, max_length: int = 128) -> dict:
    """Encode a QA or text record, keeping its instance_id."""
    row = (encode_qa(tokenizer, record["question"], record["answer"], max_length)
           if "question" in record else encode_text(tokenizer, record["text"], max_length))
    return {**row, "instance_id": record["instance_id"]}


def collate(rows: Sequence[dict], tokenizer) -> dict:
    """Right-pad encoded rows into a batch: input_ids, attention_mask, labels (B, T), ids."""
    if not rows:
        raise ValueError("cannot collate an empty list of rows")
    width = max(len(r["input_ids"]) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)                  # (B, T)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)              # (B, T)
    attn = torch.zeros((len(rows), width), dtype=torch.long)                     # (B, T)
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[b, :n] = torch.tensor(r["input_ids"])
        labels[b, :n] = torch.tensor(r["labels"])
        attn[b, :n] = 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels,
            "instance_id": [r.get("instance_id", str(i)) for i, r in enumerate(rows)]}
