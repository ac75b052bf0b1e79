"""Known values for the pure TOFU / ROUGE / memorisation formulas (stats.py)."""
import numpy as np
import pytest
from rouge_score import rouge_scorer
from scipy.stats import hmean, ks_2samp

from unlearning.evaluation import stats
from unlearning.evaluation.scoring import TokenScores


def test_ks_p_value_is_one_for_identical_samples():
    x = np.array([0.3, 1.2, 0.8, 2.5, 0.1])
    p, d = stats.forget_quality(x, x.copy())
    assert p == pytest.approx(1.0) and d == 0.0


def test_forget_quality_matches_scipy_on_different_samples():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=30), rng.lognormal(1.0, size=25)
    p, d = stats.forget_quality(a, b)
    ref = ks_2samp(a, b)
    assert p == pytest.approx(ref.pvalue) and d == pytest.approx(ref.statistic)
    assert p < 0.05


def test_model_utility_is_scipy_hmean():
    v = [0.9, 0.35, 0.6, 0.5, 0.72, 0.41, 0.88, 0.66, 0.3]
    assert stats.model_utility(v) == pytest.approx(hmean(v))
    assert stats.model_utility(v) == pytest.approx(9 / sum(1 / x for x in v))


def test_model_utility_zero_and_nan():
    assert stats.model_utility([0.5, 0.0, 0.4]) == 0.0
    assert np.isnan(stats.model_utility([0.5, np.nan]))
    with pytest.raises(ValueError, match="non-negative"):
        stats.model_utility([0.5, -0.1])


def test_rouge_matches_rouge_score_on_fixed_strings():
    preds = ["the cat sat on the mat", "Basil Mahfouz Al-Kuwaiti was born in 1956", ""]
    refs = ["the cat is on the mat", "The author is Basil Mahfouz Al-Kuwaiti", "anything"]
    recall, f1 = stats.rouge_l(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for i, (p, r) in enumerate(zip(preds, refs)):
        s = scorer.score(r, p)["rougeL"]
        assert recall[i] == pytest.approx(s.recall) and f1[i] == pytest.approx(s.fmeasure)
    # hand: LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" (5 of 6)
    assert recall[0] == pytest.approx(5 / 6)
    # hand: LCS = "basil mahfouz al kuwaiti" (4) of the 7 reference tokens ("al-" splits)
    assert recall[1] == pytest.approx(4 / 7)
    assert recall[2] == 0.0


def test_truth_ratio_two_example_table():
    # mean token NLLs; p = exp(-nll)
    para = np.array([np.log(2.0), np.log(4.0)])                 # p_para = 1/2, 1/4
    pert = np.array([[np.log(4.0), np.log(8.0)],                # p_pert = 1/4, 1/8
                     [np.log(2.0), np.log(2.0)]])               # p_pert = 1/2, 1/2
    r = stats.truth_ratio(para, pert, mean="arithmetic")
    # row 0: mean(1/4, 1/8) / (1/2) = (3/16) * 2 = 3/8; row 1: (1/2) / (1/4) = 2
    np.testing.assert_allclose(r, [3 / 8, 2.0])
    # forget form: mean(min(R, 1/R)) = (3/8 + 1/2) / 2
    assert stats.truth_ratio_forget(r) == pytest.approx((3 / 8 + 1 / 2) / 2)
    # utility form: mean(max(0, 1 - R)) = (5/8 + 0) / 2
    assert stats.truth_ratio_utility(r) == pytest.approx(5 / 16)
    # geometric (TOFU code) form: exp(mean nll_pert - nll_para)
    # row 0: exp((log4 + log8)/2 - log2) = sqrt(32)/2 = 2*sqrt(2); row 1: exp(log2 - log4) = 1/2
    np.testing.assert_allclose(stats.truth_ratio_gm(para, pert), [2 * np.sqrt(2), 0.5])


def test_truth_ratio_geometric_is_the_default_and_matches_tofu_code():
    """TOFU aggregate_eval_stat.py L63-71: curr_stat_1 = exp(mean_j pert_loss - para_loss);
    forget: mean(min(c, 1/c)); others: mean(max(0, 1 - 1/c)). open-unlearning: wrong_prob /
    correct_prob with wrong avg_loss averaged over the perturbed answers."""
    para = np.array([np.log(2.0), np.log(4.0)])                 # p_para = 1/2, 1/4
    pert = np.array([[np.log(4.0), np.log(8.0)],                # p_pert = 1/4, 1/8
                     [np.log(2.0), np.log(2.0)]])               # p_pert = 1/2, 1/2
    r = stats.truth_ratio(para, pert)
    # row 0: geomean(1/4, 1/8) / (1/2) = 2 / sqrt(32) = 1/(2 sqrt 2); row 1: (1/2) / (1/4) = 2
    np.testing.assert_allclose(r, [1 / (2 * np.sqrt(2)), 2.0])
    c = np.exp(pert.mean(-1) - para)                            # TOFU's curr_stat_1
    np.testing.assert_allclose(r, 1 / c)
    assert stats.truth_ratio_forget(r) == pytest.approx(np.mean(np.minimum(c, 1 / c)))
    assert stats.truth_ratio_utility(r) == pytest.approx(np.mean(np.maximum(0, 1 - 1 / c)))
    # open-unlearning's form with its 1e-10: within 1e-9
    wrong, correct = np.exp(-pert.mean(-1)), np.exp(-para)
    np.testing.assert_allclose(r, wrong / (correct + 1e-10), rtol=1e-8)
    with pytest.raises(ValueError, match="geometric.*arithmetic"):
        stats.truth_ratio(para, pert, mean="harmonic")


def test_normalised_option_prob():
    gt = np.array([np.log(2.0)])                                 # 1/2
    pert = np.array([[np.log(4.0), np.log(4.0), np.log(2.0)]])   # 1/4, 1/4, 1/2
    # (1/2) / (1/2 + 1/4 + 1/4 + 1/2) = 1/3
    np.testing.assert_allclose(stats.normalised_option_prob(gt, pert), [1 / 3])


def test_extraction_strength_and_exact_memorization_by_hand():
    top1 = np.array([[1, 1, 1, 1, 0],      # all 4 real tokens predicted: k*=0 -> ES 1
                     [0, 1, 1, 1, 0],      # suffix from 1 predicted: k*=1 -> 1 - 1/4
                     [1, 1, 0, 1, 1],      # 5 tokens, suffix from 3: k*=3 -> 1 - 3/5
                     [1, 1, 1, 0, 0]], bool)  # last real token (of 4) wrong: no k
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
    # no k: open-unlearning's loop ends at k = L - 1 -> 1/L = 1/4; the paper's reading gives 0
    np.testing.assert_allclose(stats.extraction_strength(top1, mask), [1.0, 0.75, 0.4, 0.25])
    np.testing.assert_allclose(stats.extraction_strength(top1, mask, no_match="paper"),
                               [1.0, 0.75, 0.4, 0.0])
    np.testing.assert_allclose(stats.exact_memorization(top1, mask), [1.0, 0.75, 0.8, 0.75])


def test_extraction_strength_against_slow_loop():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = rng.integers(1, 8)
        width = n + rng.integers(0, 3)
        mask = np.arange(width) < n
        top1 = (rng.random(width) < 0.7) & mask
        k = next((k for k in range(n) if top1[k:n].all()), n)
        es = stats.extraction_strength(top1[None], mask[None], no_match="paper")[0]
        assert es == pytest.approx(1 - k / n)
        # open-unlearning memorization.py: `for k in range(valid_len): if equal: break`
        for k_ref in range(n):
            if top1[k_ref:n].all():
                break
        assert stats.extraction_strength(top1[None], mask[None])[0] == pytest.approx(1 - k_ref / n)


def test_extraction_strength_is_one_for_a_memorised_answer_whose_eos_is_not_the_argmax():
    """Every answer token is the argmax but the final EOS is not: open-unlearning leaves the
    EOS out (`tokenwise_vocab_logprobs`, "-1 to ignore eos prediction") and scores 1.0; with
    the EOS the old definition scored 0 and EM 5/6."""
    top1 = np.array([[1, 1, 1, 1, 1, 0, 0]], bool)              # 6 labels, the last is EOS
    mask = np.array([[1, 1, 1, 1, 1, 1, 0]], bool)
    zeros = np.zeros(top1.shape)
    sc = TokenScores(zeros, zeros, zeros, top1, mask).without_last()
    assert sc.mask.sum() == 5
    assert stats.extraction_strength(sc.top1, sc.mask)[0] == 1.0
    assert stats.exact_memorization(sc.top1, sc.mask)[0] == 1.0
    assert stats.extraction_strength(top1, mask, no_match="paper")[0] == 0.0
