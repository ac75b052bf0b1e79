"""The data layer: counts from SOURCE.md, stable ids, prompt masking, errors."""
import pytest
import torch

from unlearning.data import collate, encode_qa, load_split, prompt_text
from unlearning.models import tiny_tokenizer
from unlearning.tasks import _indices, build_task, load_spec, normal_samples

TOFU_COUNTS = {"full": 4000, "forget01": 40, "forget05": 200, "forget10": 400, "retain99": 3960,
               "retain95": 3800, "retain90": 3600, "forget01_perturbed": 40,
               "forget05_perturbed": 200, "forget10_perturbed": 400, "retain_perturbed": 400,
               "real_authors": 100, "real_authors_perturbed": 100, "world_facts": 117,
               "world_facts_perturbed": 117, "holdout01": 40, "holdout05": 200, "holdout10": 400,
               "idk": 100}
OTHER_COUNTS = {("muse_news", "knowmem_forget_qa"): 100, ("muse_news", "knowmem_retain_qa"): 100,
                ("muse_news", "knowmem_forget_qa_icl"): 10, ("muse_news", "verbmem_forget"): 100,
                ("muse_news", "privleak_forget"): 100, ("muse_news", "privleak_holdout"): 100,
                ("muse_news", "raw_forget"): 889, ("muse_news", "sust_forget_4"): 887,
                ("hp", "knowmem_forget_qa"): 100, ("hp", "knowmem_retain_qa"): 100,
                ("hp", "wiki_retain1"): 12, ("hp", "wiki_retain2"): 13, ("hp", "wikipedia"): 7}


@pytest.mark.parametrize("split,n", sorted(TOFU_COUNTS.items()))
def test_tofu_counts_match_source_md(split, n):
    assert len(load_split("tofu", split)) == n


@pytest.mark.parametrize("key,n", sorted(OTHER_COUNTS.items()))
def test_muse_and_hp_counts_match_source_md(key, n):
    assert len(load_split(*key)) == n


def test_tofu_ids_are_indices_of_full():
    full = {r["instance_id"]: r for r in load_split("tofu", "full")}
    for split in ("forget05", "retain90", "forget10_perturbed", "retain_perturbed"):
        for r in load_split("tofu", split):
            assert full[r["instance_id"]]["question"] == r["question"]
    assert load_split("tofu", "forget01")[0]["instance_id"] == "tofu/3960"
    assert load_split("tofu", "real_authors")[3]["instance_id"] == "tofu-real_authors/3"


def test_prompt_tokens_are_masked_and_answer_is_labelled():
    tok = tiny_tokenizer()
    row = encode_qa(tok, "Who?", "Me.", max_length=64)
    n_prompt = len(tok(prompt_text(tok, "Who?")).input_ids)
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    answer = [t for t in row["labels"] if t != -100]
    assert tok.decode(answer) == " Me." + tok.eos_token
    assert row["input_ids"][n_prompt:] == answer


def test_prompt_longer_than_max_length_raises():
    with pytest.raises(ValueError, match="max_length"):
        encode_qa(tiny_tokenizer(), "x" * 100, "y", max_length=20)


def test_collate_pads_right_and_masks_padding():
    tok = tiny_tokenizer()
    rows = [encode_qa(tok, "Q", "long answer", 64), encode_qa(tok, "Q", "a", 64)]
    b = collate(rows, tok)
    n0, n1 = len(rows[0]["input_ids"]), len(rows[1]["input_ids"])
    assert b["input_ids"].shape == (2, n0)
    assert b["attention_mask"].sum(1).tolist() == [n0, n1]
    assert (b["labels"][1, n1:] == -100).all() and (b["input_ids"][1, n1:] == tok.pad_token_id).all()


def test_bad_inputs_raise_specific_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown benchmark 'tofoo'"):
        load_split("tofoo", "full")
    with pytest.raises(ValueError, match="unknown tofu split 'forget07'"):
        load_split("tofu", "forget07")
    monkeypatch.setenv("GEFFECT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_split("tofu", "full")
    monkeypatch.setenv("GEFFECT_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="forget01.json; not found"):
        load_split("tofu", "forget01")
    monkeypatch.delenv("GEFFECT_DATA_DIR")
    with pytest.raises(ValueError, match="forget set .* is empty"):
        build_task(tiny_tokenizer(), "tofu", "forget01", "retain99", n_forget=0)
    with pytest.raises(ValueError, match="bad split spec"):
        load_spec("tofu", "retain99[1:2]")


def test_split_spec_slices_and_joins():
    recs = load_spec("tofu", "retain99[:3]+forget01")
    assert [r["instance_id"] for r in recs[:4]] == ["tofu/0", "tofu/1", "tofu/2", "tofu/3960"]
    assert len(recs) == 43


def test_retain_nearest_picks_the_most_similar_records():
    forget = [{"question": "red apples grow", "answer": "yes", "instance_id": "f0"}]
    pool = [{"question": f"q{i}", "answer": t, "instance_id": f"r{i}"}
            for i, t in enumerate(["blue sky", "red apples grow on trees", "apples", "cars"])]
    picked = normal_samples("retain-nearest", forget, 2, retain=pool)
    assert [r["instance_id"] for r in picked[0]] == ["r1", "r2"]
    with pytest.raises(ValueError, match="unknown normal-sample strategy"):
        normal_samples("nearest", forget, 2, retain=pool)


def test_alternatives_pair_the_forget_question_with_other_answers():
    task = build_task(tiny_tokenizer(), "tofu", "forget01", "retain99", n_forget=2, k=4,
                      normal_strategy="alternatives")
    pert = load_split("tofu", "forget01_perturbed")[0]
    normal = task.normal[0]
    assert [r["question"] for r in normal] == [task.forget[0]["question"]] * 3
    assert [r["answer"] for r in normal] == [pert["paraphrased_answer"], *pert["perturbed_answer"][:2]]


def test_batches_are_a_function_of_the_step_and_cover_each_epoch():
    assert _indices(3, 4, 10, seed=1) == _indices(3, 4, 10, seed=1)
    epoch = [i for s in range(5) for i in _indices(s, 2, 10, seed=0)]
    assert sorted(epoch) == list(range(10))
    task = build_task(tiny_tokenizer(), "tofu", "forget01", "retain99", n_forget=4, k=3,
                      normal_strategy="retain-random")
    b = task.batch(0, 2, ("forget", "normal", "idk"))
    assert b["normal"]["input_ids"].shape[0] == 4
    assert [i.split("#")[0] for i in b["idk"]["instance_id"]] == b["forget"]["instance_id"]
    assert torch.equal(task.batch(5, 2, ("forget",))["forget"]["input_ids"],
                       task.batch(5, 2, ("forget",))["forget"]["input_ids"])
