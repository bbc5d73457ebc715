"""The learning part: time cutoffs, the prior correction of class weights, early stopping on training rows only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xgboost

from features.contract import FEATURE_COLUMNS
from training.data import Frame
from training.hyperparameters import parse_hyperparameters
from training.model import DataError, _correct_prior, fit, split_by_time, time_cutoff


NAMES = list(FEATURE_COLUMNS)


def _frame(rows=3000, seed=0, rate=0.1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURE_COLUMNS))).astype(np.float32)
    x[rng.random(rows) < 0.1, 2] = np.nan
    y = (rng.random(rows) < 1 / (1 + np.exp(-(np.log(rate / (1 - rate)) + 1.5 * x[:, 0])))).astype(np.int8)
    dates = np.datetime64("2020-01-01") + rng.integers(0, 365, rows).astype("timedelta64[D]")
    return Frame(features=x, label=y, loan_date=dates, loan_id=np.arange(rows, dtype=np.int64))


def test_time_cutoff_by_hand():
    dates = np.array(["2020-01-01", "2020-01-02", "2020-01-02", "2020-01-03", "2020-01-04"], dtype="datetime64[D]")
    # The latest 40 % of 5 rows starts at the 4th row by date; a date on the cutoff goes to validation.
    assert time_cutoff(dates, 0.4) == np.datetime64("2020-01-03")
    assert time_cutoff(dates, 0.7) == np.datetime64("2020-01-02")


def test_split_puts_every_later_loan_in_validation():
    frame = _frame()
    split = split_by_time(frame, parse_hyperparameters({"validation_fraction": "0.25"}))
    assert split.train.loan_date.max() < split.validation.loan_date.min()
    assert len(split.train) + len(split.validation) == len(frame)
    assert abs(len(split.validation) / len(frame) - 0.25) < 0.02
    assert split.cutoff == str(split.validation.loan_date.min())


def test_split_by_hand():
    # Ten loans, one a day from 2020-01-01: the latest 30 % are the 3 loans from 2020-01-08 on.
    rows = 10
    frame = Frame(
        features=np.arange(rows * len(FEATURE_COLUMNS), dtype=np.float32).reshape(rows, -1),
        label=np.array([0, 1] * 5, dtype=np.int8),
        loan_date=np.datetime64("2020-01-01") + np.arange(rows)[::-1].astype("timedelta64[D]"),  # newest first
        loan_id=np.arange(rows, dtype=np.int64),
    )
    split = split_by_time(frame, parse_hyperparameters({"validation_fraction": "0.3"}))
    assert split.cutoff == "2020-01-08"
    assert sorted(split.validation.loan_id.tolist()) == [0, 1, 2]  # the three newest, rows 0-2
    assert sorted(split.train.loan_id.tolist()) == [3, 4, 5, 6, 7, 8, 9]
    by_date = parse_hyperparameters({"split_date": "2020-01-05"})
    assert sorted(split_by_time(frame, by_date).validation.loan_id.tolist()) == [0, 1, 2, 3, 4, 5]  # 01-05 .. 01-10


def test_split_with_a_date_outside_the_data():
    with pytest.raises(
        DataError, match="one side would be empty; set split_date inside that range or give a validation channel"
    ):
        split_by_time(_frame(), parse_hyperparameters({"split_date": "2019-01-01"}))


def test_prior_correction_shifts_every_margin_by_log_weight():
    frame = _frame()
    params = {"objective": "binary:logistic", "tree_method": "hist", "scale_pos_weight": 9.0, "max_depth": 2}
    dm = xgboost.DMatrix(frame.features, label=frame.label, feature_names=list(FEATURE_COLUMNS))
    booster = xgboost.train(params, dm, 10)
    corrected = _correct_prior(booster, 9.0)
    before = booster.predict(dm, output_margin=True)
    after = corrected.predict(dm, output_margin=True)
    np.testing.assert_allclose(before - after, math.log(9.0), atol=1e-5)
    assert _correct_prior(booster, 1.0) is booster


def test_weighted_and_corrected_probabilities_are_calibrated_on_average():
    frame = _frame(rows=6000, rate=0.05)
    hps = parse_hyperparameters({"scale_pos_weight": "auto", "num_round": "40", "early_stopping_rounds": "0"})
    result = fit(frame, hps, nthread=1)
    negatives, positives = float((frame.label == 0).sum()), float(frame.label.sum())
    assert result.positive_weight == pytest.approx(negatives / positives)
    p = result.booster.predict(xgboost.DMatrix(frame.features, feature_names=list(FEATURE_COLUMNS)))
    assert p.mean() == pytest.approx(frame.label.mean(), rel=0.3)


def _best_round_by_hand(aucs: list[float], patience: int) -> int:
    """Early stopping as its definition says: the round with the highest AUC so far, stopped once
    `patience` rounds have passed without a strictly higher one (1-based round count)."""
    best, best_round = -1.0, 0
    for round_number, auc in enumerate(aucs, start=1):
        if auc > best:
            best, best_round = auc, round_number
        elif round_number - best_round >= patience:
            break
    return best_round


def test_early_stopping_watches_the_latest_training_rows():
    """The number of rounds is recomputed here without XGBoost's early stopping: a full-length
    booster trained on the older rows only, scikit-learn's AUC of each prefix on the latest
    10 % of training rows by date, and the patience rule applied by hand."""
    from sklearn.metrics import roc_auc_score

    frame = _frame(rows=4000)
    given = {"num_round": "400", "early_stopping_rounds": "10", "eta": "0.3"}
    hps = parse_hyperparameters(given)
    # The watched slice, from the dates: the latest days holding at least 10 % of the rows.
    days = np.sort(frame.loan_date)
    cutoff = days[len(days) - int(math.ceil(0.1 * len(days)))]
    watch = frame.loan_date >= cutoff
    assert 0.09 * len(frame) <= watch.sum() <= 0.2 * len(frame)
    older = xgboost.DMatrix(frame.features[~watch], label=frame.label[~watch], missing=np.nan, feature_names=NAMES)
    full = xgboost.train({**hps.learner_params(1), "scale_pos_weight": 1.0}, older, num_boost_round=400)
    latest = xgboost.DMatrix(frame.features[watch], missing=np.nan, feature_names=NAMES)
    aucs = [roc_auc_score(frame.label[watch], full.predict(latest, iteration_range=(0, n))) for n in range(1, 401)]
    expected = _best_round_by_hand(aucs, patience=10)
    assert 1 < expected < 400  # the case exercises stopping, not the cap

    no_refit = fit(frame, hps, nthread=1)
    assert no_refit.rounds == expected
    assert no_refit.booster.num_boosted_rounds() == expected
    assert f"dated >= {str(cutoff)[:10]}" in no_refit.early_stopping and "refit" not in no_refit.early_stopping
    # Without refit the model is the older rows' booster cut at the best round: its scores on the
    # latest rows are the ones scikit-learn ranked best.
    assert roc_auc_score(frame.label[watch], no_refit.booster.predict(latest)) == pytest.approx(aucs[expected - 1])

    refit = fit(frame, parse_hyperparameters({**given, "refit": "true"}), nthread=1)
    assert refit.rounds == expected and "refit" in refit.early_stopping
    everything = xgboost.DMatrix(frame.features, label=frame.label, missing=np.nan, feature_names=NAMES)
    by_hand = xgboost.train({**hps.learner_params(1), "scale_pos_weight": 1.0}, everything, num_boost_round=expected)
    np.testing.assert_allclose(refit.booster.predict(everything), by_hand.predict(everything), rtol=1e-6)
