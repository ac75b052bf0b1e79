"""An unlearning task: forget, retain, "I don't know" and SGA normal samples, batched per step.

Batches are a pure function of (step, seed): a resumed run sees exactly the batches it would
have seen, and no loader state needs saving.

SGA normal-sample strategies (arXiv:2510.22376 combines each forget sample with K-1 normal
samples; which samples are "normal" is a design choice, so several are offered and recorded):
    retain-nearest  the K-1 retain samples most similar to the forget sample (TF-IDF cosine of
                    question + answer text; cheap and offline)
    retain-random   K-1 retain samples drawn at random (seeded, fixed per forget sample)
    alternatives    the forget question with other answers: TOFU's paraphrased answer, then
                    its perturbed answers (needs the forget split's `_perturbed` file)
    idk             the forget question with "I don't know" answers (TOFU idontknow.jsonl)
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from .data import collate, encode, load_split

NORMAL_STRATEGIES = ("retain-nearest", "retain-random", "alternatives", "idk")


def load_spec(default_benchmark: str, spec: str, data_dir=None) -> list[dict]:
    """Records named by a split spec: 'split', 'benchmark:split', 'split[:N]', 'a+b'.

    e.g. 'retain99[:40]+forget01' is the first 40 retain records followed by forget01.
    """
    records: list[dict] = []
    for part in spec.split("+"):
        m = re.fullmatch(r"(?:(\w+):)?(\w+)(?:\[:(\d+)\])?", part.strip())
        if m is None:
            raise ValueError(f"bad split spec {part!r}; expected 'split', 'benchmark:split' or "
                             f"'split[:N]', joined with '+'")
        bench, split, n = m.group(1) or default_benchmark, m.group(2), m.group(3)
        records += load_split(bench, split, data_dir)[: int(n) if n else None]
    return records


def _text(record: dict) -> str:
    return record.get("text") or f"{record.get('question', '')} {record.get('answer', '')}"


def nearest(forget: list[dict], pool: list[dict], n: int) -> list[list[dict]]:
    """For each forget record, the n pool records of highest TF-IDF cosine similarity."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer().fit([_text(r) for r in forget + pool])
    sim = vec.transform([_text(r) for r in forget]) @ vec.transform([_text(r) for r in pool]).T
    sim = sim.toarray()                                             # (n_forget, n_pool)
    return [[pool[j] for j in row.argsort()[::-1][:n]] for row in sim]


def normal_samples(strategy: str, forget: list[dict], n: int, *, retain: list[dict],
                   perturbed: list[dict] | None = None, idk: list[dict] | None = None,
                   seed: int = 0) -> list[list[dict]]:
    """n normal records per forget record, by the named strategy (see the module docstring)."""
    if strategy not in NORMAL_STRATEGIES:
        raise ValueError(f"unknown normal-sample strategy {strategy!r}; expected one of "
                         f"{NORMAL_STRATEGIES}")
    rng = random.Random(seed)
    if strategy == "retain-nearest":
        return nearest(forget, retain, n)
    if strategy == "retain-random":
        return [rng.sample(retain, n) for _ in forget]
    if strategy == "idk":
        return [[{"question": f["question"], "answer": a["answer"],
                  "instance_id": f"{f['instance_id']}#{a['instance_id']}"}
                 for a in rng.sample(idk, n)] for f in forget]
    if perturbed is None:
        raise ValueError("normal-sample strategy 'alternatives' needs the forget split's "
                         "perturbed file (TOFU forgetXX_perturbed)")
    by_id = {p["instance_id"]: p for p in perturbed}
    out = []
    for f in forget:
        p = by_id[f["instance_id"]]
        answers = [p["paraphrased_answer"], *p["perturbed_answer"]]
        if len(answers) < n:
            raise ValueError(f"'alternatives' has {len(answers)} answers per question; "
                             f"K-1 = {n} asked for")
        out.append([{"question": f["question"], "answer": a, "instance_id": f"{f['instance_id']}#alt{j}"}
                    for j, a in enumerate(answers[:n])])
    return out


def _indices(step: int, size: int, n: int, seed: int) -> list[int]:
    """Rows of batch `step`: consecutive slices of per-epoch seeded permutations of range(n)."""
    out = []
    for j in range(step * size, (step + 1) * size):
        epoch, pos = divmod(j, n)
        perm = list(range(n))
        random.Random(seed * 100_003 + epoch).shuffle(perm)
        out.append(perm[pos])
    return out


@dataclass
class Task:
    """Records per split, plus the encoder; `batch(step)` gives the per-split batches."""

    tokenizer: object
    forget: list[dict]
    retain: list[dict]
    idk: list[dict] = field(default_factory=list)
    normal: list[list[dict]] = field(default_factory=list)
    normal_strategy: str = ""
    max_length: int = 128
    _cache: dict = field(default_factory=dict, repr=False)

    def encode(self, records: list[dict]) -> dict:
        rows = []
        for r in records:
            if r["instance_id"] not in self._cache:
                self._cache[r["instance_id"]] = encode(self.tokenizer, r, self.max_length)
            rows.append(self._cache[r["instance_id"]])
        return collate(rows, self.tokenizer)

    def batch(self, step: int, size: int, splits: tuple[str, ...], seed: int = 0) -> dict[str, dict]:
        """Per-split batches for one step. `normal` and `idk` rows follow the forget rows."""
        f_idx = _indices(step, size, len(self.forget), seed)
        out = {}
        for split in splits:
            if split == "forget":
                out[split] = self.encode([self.forget[i] for i in f_idx])
            elif split == "retain":
                r_idx = _indices(step, size, len(self.retain), seed + 1)
                out[split] = self.encode([self.retain[i] for i in r_idx])
            elif split == "normal":
                if not self.normal:
                    raise ValueError("the objective reads the 'normal' split but the task has "
                                     "no normal samples (set k and normal_strategy)")
                out[split] = self.encode([r for i in f_idx for r in self.normal[i]])
            elif split == "idk":
                rng = random.Random(seed * 7919 + step)
                out[split] = self.encode([
                    {"question": self.forget[i]["question"], "answer": a["answer"],
                     "instance_id": f"{self.forget[i]['instance_id']}#{a['instance_id']}"}
                    for i, a in zip(f_idx, rng.choices(self.idk, k=len(f_idx)))])
            else:
                raise ValueError(f"unknown split {split!r}; expected forget, retain, normal or idk")
        return out


def build_task(tokenizer, benchmark: str, forget_split: str, retain_split: str, *,
               n_forget: int | None = None, n_retain: int | None = None, k: int = 0,
               normal_strategy: str = "retain-nearest", max_length: int = 128, seed: int = 0,
               data_dir=None) -> Task:
    """Load the records of a task. `retain_split` may name another benchmark ('muse_news:...')."""
    forget = load_spec(benchmark, forget_split, data_dir)[:n_forget]
    if not forget:
        raise ValueError(f"forget set {benchmark}/{forget_split} is empty (n_forget={n_forget})")
    retain = load_spec(benchmark, retain_split, data_dir)[:n_retain]
    if not retain:
        raise ValueError(f"retain set {retain_split} is empty (n_retain={n_retain})")
    idk = load_split("tofu", "idk", data_dir) if "question" in forget[0] else []
    normal: list[list[dict]] = []
    if k > 1 and normal_strategy.startswith("retain") and k - 1 > len(retain):
        raise ValueError(f"k={k} needs k-1={k - 1} normal samples per forget record from the "
                         f"retain set, which has {len(retain)} records; lower k or use more "
                         f"retain records (n_retain={n_retain})")
    if k > 1:
        perturbed = None
        if normal_strategy == "alternatives":
            perturbed = load_split(benchmark, f"{forget_split}_perturbed", data_dir)
        normal = normal_samples(normal_strategy, forget, k - 1, retain=retain,
                                perturbed=perturbed, idk=idk, seed=seed)
    return Task(tokenizer, forget, retain, idk, normal, normal_strategy if k > 1 else "",
                max_length)
