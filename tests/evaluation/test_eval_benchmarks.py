"""Every benchmark end to end on a tiny float64 model; numbers checked against slow oracles."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import hmean

from unlearning.data import encode_qa, load_split
from unlearning.evaluation import evaluate, summary_json, tofu_truth_ratios
from unlearning.evaluation import stats
from unlearning.evaluation.text import text_rows
from unlearning.models import tiny_model

from .eval_oracle import slow_nll, slow_row_scores

N = 3
FAST = dict(max_instances=N, max_new_tokens=6, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def model():
    return tiny_model("tiny-llama", seed=0, dtype=torch.float64)


@pytest.fixture(scope="module")
def tofu_ds(model, tok):
    return evaluate(model, tok, "tofu", forget_split="forget01", **FAST)


def _in01(x):
    x = x[~np.isnan(x)]
    return x.size > 0 and ((x >= 0) & (x <= 1)).all()


def test_unknown_benchmark_and_split_name_the_options(model, tok):
    with pytest.raises(ValueError, match="expected one of.*tofu.*muse_news.*hp.*utility"):
        evaluate(model, tok, "wmdp")
    with pytest.raises(ValueError, match="forget01.*forget05.*forget10"):
        evaluate(model, tok, "tofu", forget_split="forget02")
    with pytest.raises(ValueError, match="utility set"):
        evaluate(model, tok, "utility", utility_set="books", **FAST)


def test_tofu_layout_ids_and_ranges(tofu_ds):
    ds = tofu_ds
    assert ds.split.values.tolist() == sum([[s] * N for s in
                                            ("forget", "retain", "real_authors", "world_facts",
                                             "holdout")], [])
    assert ds.instance_id.values[:N].tolist() == ["tofu/3960", "tofu/3961", "tofu/3962"]
    assert ds.instance_id.values[-1] == "tofu-holdout/2"
    for var in ("probability", "rouge_l", "extraction_strength", "exact_memorization"):
        assert _in01(ds[var].values[0]), var
    for metric in ds.metric.values:
        v = ds.summary.sel(metric=metric).item()
        assert np.isnan(v) == (metric.startswith("forget_quality")), metric
    assert (ds.truth_ratio.values[0, :4 * N] > 0).all()
    assert np.isnan(ds.truth_ratio.values[0, 4 * N:]).all()       # not defined on holdout
    assert not np.isnan(ds.mia_min_k.values[0, :N]).any()
    assert np.isnan(ds.mia_min_k.values[0, N:4 * N]).all()
    assert "forget_quality" in json.loads(ds.attrs["notes"])


def test_tofu_numbers_match_a_slow_loop(model, tok, tofu_ds):
    ds = tofu_ds
    r = load_split("tofu", "forget01_perturbed")[0]
    nll = lambda a: slow_nll(model, encode_qa(tok, r["question"], a, max_length=512))
    gt, para = nll(r["answer"]), nll(r["paraphrased_answer"])
    pert = np.array([nll(a) for a in r["perturbed_answer"]])
    assert ds.nll.values[0, 0] == pytest.approx(gt, abs=1e-9)
    assert ds.probability.values[0, 0] == pytest.approx(np.exp(-gt), rel=1e-9)
    # geometric truth ratio (TOFU aggregate_eval_stat.py L63-71): exp(nll_para - mean nll_pert)
    assert ds.truth_ratio.values[0, 0] == pytest.approx(np.exp(para - pert.mean()), rel=1e-9)
    assert ds.attrs["truth_ratio_mean"] == "geometric"
    assert ds.truth_ratio_gm.values[0, 0] == pytest.approx(np.exp(pert.mean() - para), rel=1e-9)
    wf = load_split("tofu", "world_facts_perturbed")[1]
    nll = lambda a: slow_nll(model, encode_qa(tok, wf["question"], a, max_length=512))
    p = np.exp(-np.array([nll(wf["answer"])] + [nll(a) for a in wf["perturbed_answer"]]))
    i = 3 * N + 1
    assert ds.split.values[i] == "world_facts"
    assert ds.probability.values[0, i] == pytest.approx(p[0] / p.sum(), rel=1e-9)
    # no paraphrase on world facts: the gold answer stands in for it
    assert ds.truth_ratio.values[0, i] == pytest.approx(np.exp(np.log(p[1:]).mean()) / p[0],
                                                        rel=1e-9)


def test_tofu_summary_is_the_documented_aggregate(tofu_ds):
    ds = tofu_ds
    s = lambda m: ds.summary.sel(metric=m).item()
    f = ds.where(ds.split == "forget", drop=True)
    assert s("forget_Q_A_Prob") == pytest.approx(float(f.probability.mean()))
    r = f.truth_ratio.values[0]
    assert s("forget_truth_ratio") == pytest.approx(np.mean(np.minimum(r, 1 / r)))
    ret = ds.where(ds.split == "retain", drop=True).truth_ratio.values[0]
    assert s("retain_Truth_Ratio") == pytest.approx(np.mean(np.maximum(0, 1 - ret)))
    nine = [s(m) for m in ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
                           "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
                           "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")]
    expected = 0.0 if min(nine) == 0 else hmean(nine)
    assert s("model_utility") == pytest.approx(expected)
    assert s("privleak") == pytest.approx(((1 - s("mia_min_k")) - 0.5) / 0.5 * 100)


def test_forget_quality_is_one_against_itself_from_array_npy_json(model, tok, tmp_path):
    tr = tofu_truth_ratios(model, tok, forget_split="forget01", max_instances=N, progress=False)
    assert tr.shape == (N,) and (tr > 0).all()
    np.save(tmp_path / "tr.npy", tr)
    (tmp_path / "tr.json").write_text(json.dumps({"truth_ratio": tr.tolist()}))
    for source in (tr, tmp_path / "tr.npy", str(tmp_path / "tr.json")):
        ds = evaluate(model, tok, "tofu", forget_split="forget01", retain_truth_ratios=source,
                      **FAST)
        assert ds.summary.sel(metric="forget_quality").item() == pytest.approx(1.0)
        np.testing.assert_allclose(ds.truth_ratio_gm.values[0, :N], tr, rtol=1e-12)
        assert summary_json(ds)["forget_quality"] == pytest.approx(1.0)


def test_muse_news_runs_and_mia_matches_slow_loop(model, tok):
    model.train()
    ds = evaluate(model, tok, "muse_news", max_length=48, mia_max_length=48, **FAST)
    assert model.training                                             # mode restored
    model.eval()
    assert sorted(set(ds.split.values)) == sorted(
        ["verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak_forget",
         "privleak_holdout", "privleak_retain"])
    s = lambda m: ds.summary.sel(metric=m).item()
    for m in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE",
              "mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "extraction_strength"):
        assert 0 <= s(m) <= 1, m
    assert s("privleak") == pytest.approx(((1 - s("mia_min_k")) - 0.5) / 0.5 * 100)
    assert s("retain_PPL") > 1
    assert "muse_retain_corpus" in json.loads(ds.attrs["notes"])
    rec = load_split("muse_news", "privleak_forget")[0]
    rows, ids, _ = text_rows(tok, [rec], max_length=48)
    ref = {key: v[:-1] for key, v in slow_row_scores(model, rows[0]).items()}  # no final label
    k = max(1, int(0.4 * len(ref["logprob"])))
    i = list(ds.instance_id.values).index(ids[0])
    assert ds.mia_min_k.values[0, i] == pytest.approx(-np.sort(ref["logprob"])[:k].mean(), rel=1e-9)
    z = (ref["logprob"] - ref["mu"]) / np.sqrt(np.maximum(ref["sigma"] ** 2, 1e-6))
    assert ds.mia_min_k_plus_plus.values[0, i] == pytest.approx(-np.sort(z)[:k].mean(), rel=1e-9)


def test_muse_mia_scores_the_whole_article_up_to_2048_tokens(tok):
    """MUSE scores the full article, open-unlearning its first 2,048 tokens; a 256-token window
    scored ~14% of a MUSE-News article. Here every article's first min(len, 2048) tokens count."""
    model = tiny_model("tiny-llama", seed=0, dtype=torch.float64)
    model.config.max_position_embeddings = 4096                    # rotary: no table to grow
    ds = evaluate(model, tok, "muse_news", max_length=32, max_instances=1, max_new_tokens=2,
                  batch_size=2, progress=False)
    recs = load_split("muse_news", "privleak_forget")[:1]
    f = ds.where(ds.split == "privleak_forget", drop=True)
    for j, rec in enumerate(recs):
        n_all = len(tok(rec["text"]).input_ids)
        assert n_all > 256
        assert int(f.n_tokens.values[j]) == min(n_all, 2048) - 1     # every token but the first
        rows, _, _ = text_rows(tok, [rec], max_length=2048)
        ref = slow_row_scores(model, rows[0])
        assert len(ref["logprob"]) == min(n_all, 2048) - 1
        lp = ref["logprob"][:-1]                                     # open-unlearning drops one
        k = max(1, int(0.4 * len(lp)))
        assert f.mia_min_k.values[0, j] == pytest.approx(-np.sort(lp)[:k].mean(), rel=1e-9)
        assert f.nll.values[0, j] == pytest.approx(-ref["logprob"].mean(), rel=1e-9)


def test_hp_runs_with_windows_and_corpus_perplexity(model, tok):
    ds = evaluate(model, tok, "hp", max_length=40, **FAST)
    s = lambda m: ds.summary.sel(metric=m).item()
    hp = ds.where(ds.split == "hp_wiki", drop=True)
    assert hp.instance_id.values.tolist() == ["hp-wikipedia/0#0", "hp-wikipedia/0#1",
                                              "hp-wikipedia/0#2"]
    tokens = hp.n_tokens.values
    assert s("hp_wiki_PPL") == pytest.approx(np.exp((hp.nll.values[0] * tokens).sum() / tokens.sum()))
    assert s("hp_wiki_Prob") == pytest.approx(float(np.exp(-hp.nll).mean()))
    assert s("fluency_PPL") == s("retain_wiki_PPL") > 1
    assert 0 <= s("forget_knowmem_ROUGE") <= 1


@pytest.mark.parametrize("which", ["tofu", "muse_news", "hp"])
def test_utility_guard(model, tok, which):
    ds = evaluate(model, tok, "utility", utility_set=which, max_length=40, **FAST)
    s = lambda m: ds.summary.sel(metric=m).item()
    tokens = ds.n_tokens.values
    assert s("heldout_PPL") == pytest.approx(np.exp((ds.nll.values[0] * tokens).sum() / tokens.sum()))
    assert s("heldout_nll") == pytest.approx(float(ds.nll.mean()))
