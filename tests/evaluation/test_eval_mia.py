"""MIA scores, AUC and PrivLeak on constructed cases (mia.py)."""
import zlib

import numpy as np
import pytest

from unlearning.evaluation import mia
from unlearning.evaluation.scoring import TokenScores


def _scores(logprob, mask, mu=None, sigma=None):
    logprob, mask = np.asarray(logprob, float), np.asarray(mask, bool)
    mu = np.zeros_like(logprob) if mu is None else np.asarray(mu, float)
    sigma = np.ones_like(logprob) if sigma is None else np.asarray(sigma, float)
    return TokenScores(logprob * mask, mu, sigma, np.zeros_like(mask), mask)


def test_scores_by_hand():
    lp = [[-1.0, -3.0, -2.0, -4.0, -0.5], [-2.0, -2.0, 0.0, 0.0, 0.0]]
    mask = [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    mu = [[-1.0] * 5, [-1.0] * 5]
    sigma = [[2.0] * 5, [0.5] * 5]
    texts = ["hello world", "x"]
    out = mia.mia_scores(_scores(lp, mask, mu, sigma), texts, k=0.4, drop_last=False)
    np.testing.assert_allclose(out["mia_loss"], [10.5 / 5, 2.0])
    zl = [len(zlib.compress(t.encode())) for t in texts]
    np.testing.assert_allclose(out["mia_zlib"], [2.1 / zl[0], 2.0 / zl[1]])
    # k=0.4 of 5 tokens -> 2 lowest: -4, -3 -> score 3.5; of 2 tokens -> max(1, 0) = 1 lowest: -2
    np.testing.assert_allclose(out["mia_min_k"], [3.5, 2.0])
    # z = (lp - mu) / sigma: row 0 -> [0, -1, -0.5, -1.5, 0.25]: 2 lowest -1.5, -1 -> 1.25
    # row 1 -> [-2, -2]: lowest one -> 2
    np.testing.assert_allclose(out["mia_min_k_plus_plus"], [1.25, 2.0])


def test_min_k_drops_the_final_label_by_default():
    """open-unlearning `tokenwise_logprobs` keeps all label tokens but the last (the EOS)."""
    lp = [[-1.0, -3.0, -2.0, -4.0, -9.0], [-2.0, -2.0, -7.0, 0.0, 0.0]]
    mask = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    mu, sigma = [[-1.0] * 5] * 2, [[2.0] * 5, [1e-4] * 5]
    out = mia.mia_scores(_scores(lp, mask, mu, sigma), ["a", "b"], k=0.4)
    # row 0: 4 tokens left -> int(1.6) = 1 lowest: -4 ; row 1: 2 left -> 1 lowest: -2
    np.testing.assert_allclose(out["mia_min_k"], [4.0, 2.0])
    # Min-K%++: row 0 z = [0, -1, -0.5, -1.5] -> 1.5; row 1: var 1e-8 clamped to 1e-6,
    # z = (-2 + 1) / 1e-3 = -1000 -> 1000
    np.testing.assert_allclose(out["mia_min_k_plus_plus"], [1.5, 1000.0])
    # LOSS keeps every label (open-unlearning `evaluate_probability`)
    np.testing.assert_allclose(out["mia_loss"], [19.0 / 5, 11.0 / 3])


def test_auc_orientation_and_privleak_sign():
    """PrivLeak in MUSE's orientation (open-unlearning privacy.py: score = 1 - AUC)."""
    forget_member = np.array([0.5, 0.7, 0.9, 1.0])       # low loss: memorised
    holdout = np.array([2.0, 2.5, 3.0, 1.1])
    a = mia.auc(forget_member, holdout)
    assert a == 1.0
    assert mia.privleak(a, 0.5) == pytest.approx(-100.0)     # memorised target: strongly negative
    forget_over = np.array([4.0, 5.0, 6.0, 7.0])            # over-unlearned: higher than holdout
    b = mia.auc(forget_over, holdout)
    assert b == 0.0
    assert mia.privleak(b, 0.5) == pytest.approx(100.0)
    assert mia.privleak(0.6, 0.6) == 0.0
    # hand: ((1 - 0.55) - (1 - 0.5)) / (1 - 0.5) * 100 = -10
    assert mia.privleak(0.55, 0.5) == pytest.approx(-10.0)
    # with a retain-model AUC: ((1 - 0.999) - (1 - 0.6)) / 0.4 * 100 = -99.75
    assert mia.privleak(0.999, 0.6) == pytest.approx(-99.75)


def test_privleak_of_a_target_like_model_is_strongly_negative():
    """A target that memorised the forget set (forget losses below holdout's, AUC near 1)
    scores near -100, as MUSE's News target (about -99.8); the old formula gave about +100."""
    rng = np.random.default_rng(0)
    forget = rng.normal(1.0, 0.2, 500)
    holdout = rng.normal(2.5, 0.2, 500)
    a = mia.auc(forget, holdout)
    assert a > 0.99
    expected = ((1 - a) - 0.5) / 0.5 * 100                   # MUSE: (A - A_ret) / A_ret * 100
    assert mia.privleak(a) == pytest.approx(expected)
    assert mia.privleak(a) < -98


def test_auc_is_half_for_identical_distributions_and_empty_is_nan():
    x = np.array([1.0, 2.0, 3.0])
    assert mia.auc(x, x) == pytest.approx(0.5)
    assert np.isnan(mia.auc(np.array([]), x))
    with pytest.raises(ValueError, match=r"AUC in \[0, 1\)"):
        mia.privleak(0.5, 1.0)
