"""Our metrics against hand-computed cases and against scikit-learn's independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from training import metrics


def test_auc_by_hand():
    # Pairs (positive, negative): (0.35, 0.1) win, (0.35, 0.4) lose, (0.8, 0.1) win, (0.8, 0.4) win: 3 of 4.
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.roc_auc([0, 1], [0.2, 0.9]) == 1.0
    assert metrics.roc_auc([1, 0], [0.2, 0.9]) == 0.0
    # Every score tied: every pair counts half.
    assert metrics.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    # One tie between a positive and a negative among four pairs: (1 + 1 + 0.5 + 1) / 4.
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.9]) == pytest.approx(0.875)


def test_auc_of_one_class_is_nan():
    assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
    assert np.isnan(metrics.average_precision([0, 0], [0.2, 0.3]))


def test_average_precision_by_hand():
    # Descending: 0.8 (pos) P=1 R=.5; 0.4 (neg); 0.35 (pos) P=2/3 R=1  ->  .5*1 + .5*2/3.
    assert metrics.average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 + 1 / 3)


def test_average_ranks_by_hand():
    np.testing.assert_array_equal(metrics.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_log_loss_and_brier_by_hand():
    y, p = [1, 0], [0.8, 0.4]
    assert metrics.log_loss(y, p) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert metrics.brier(y, p) == pytest.approx((0.2**2 + 0.4**2) / 2)


@pytest.fixture(params=[0, 1, 2])
def scored(request):
    rng = np.random.default_rng(request.param)
    n = 3000
    y = (rng.random(n) < 0.05).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 3)))
    if request.param == 2:
        p = np.round(p, 2)  # many ties
    return y, p


def test_matches_sklearn(scored):
    y, p = scored
    assert metrics.roc_auc(y, p) == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert metrics.average_precision(y, p) == pytest.approx(sk.average_precision_score(y, p), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(sk.log_loss(y, p), abs=1e-12)
    assert metrics.brier(y, p) == pytest.approx(sk.brier_score_loss(y, p), abs=1e-12)
    fpr, tpr, _ = metrics.roc_curve(y, p)
    sk_fpr, sk_tpr, _ = sk.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_confusion_and_rates_match_sklearn(scored):
    y, p = scored
    threshold = float(np.quantile(p, 0.9))
    matrix = metrics.confusion(y, p, threshold)
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(y, predicted).ravel()
    assert (matrix.tp, matrix.fp, matrix.tn, matrix.fn) == (tp, fp, tn, fn)
    assert matrix.precision == pytest.approx(sk.precision_score(y, predicted))
    assert matrix.recall == pytest.approx(sk.recall_score(y, predicted))
    assert matrix.f1 == pytest.approx(sk.f1_score(y, predicted))


@pytest.mark.parametrize("rule", ["f1", "youden"])
def test_threshold_is_the_brute_force_best(scored, rule):
    y, p = scored
    chosen = metrics.choose_threshold(y, p, rule)
    candidates = np.unique(p)
    # Every candidate threshold at once: rows x candidates of "flagged".
    flagged = p[:, None] >= candidates[None, :]
    tp = (flagged & (y[:, None] == 1)).sum(axis=0)
    fp = (flagged & (y[:, None] == 0)).sum(axis=0)
    fn = y.sum() - tp
    if rule == "f1":
        score = 2 * tp / (2 * tp + fp + fn)
    else:
        score = tp / y.sum() - fp / (len(y) - y.sum())
    assert chosen in candidates
    assert score[candidates == chosen][0] == pytest.approx(score.max())
    # Spot-check the criterion itself against scikit-learn at the chosen threshold.
    if rule == "f1":
        assert sk.f1_score(y, (p >= chosen).astype(int)) == pytest.approx(score.max())


def test_threshold_by_hand():
    # p >= 0.8 flags one positive (F1 2/3); p >= 0.35 flags 3 with 2 positives (F1 0.8); p >= 0.1 all (F1 2/3).
    assert metrics.choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], "f1") == 0.35


def test_calibration_bins_cover_every_row():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    bins = metrics.calibration_bins(y, p, bins=4)
    assert [b["rows"] for b in bins] == [2, 2, 2, 2]
    assert [b["observed"] for b in bins] == [0.0, 0.5, 0.5, 1.0]
    assert bins[0]["predicted"] == pytest.approx(0.15)
