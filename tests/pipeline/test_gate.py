"""The gate's window and rules, on hand-worked values; its figures against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from configuration.settings import load_settings
from pipeline import gate

GATE = load_settings().pipeline.gate  # the shipped defaults


def days(*iso: str) -> np.ndarray:
    return np.array(iso, dtype="datetime64[D]")


def test_window_is_the_last_tenth_of_the_date_range():
    # 2020-01-01 .. 2020-12-31 is 365 days; a tenth is 36 days (floored): the window starts 2020-11-25.
    window = gate.window_for(days("2020-01-01", "2020-06-01", "2020-12-31"), 0.1, None, None)
    assert (window.start, window.end) == ("2020-11-25", "2020-12-31")
    assert "last 10%" in window.why


def test_window_starts_after_the_champion_training_data_where_snapshots_overlap():
    dates = days("2020-01-01", "2020-12-31")
    # the champion was fitted on loans before 2020-12-10: later than the default start, so it wins
    assert gate.window_for(dates, 0.1, "2020-12-10", None).start == "2020-12-10"
    # an older champion does not move the window
    assert gate.window_for(dates, 0.1, "2019-05-01", None).start == "2020-11-25"
    # an explicit start is taken as it is (still not before the champion's data end)
    assert gate.window_for(dates, 0.1, None, "2020-07-01").start == "2020-07-01"
    assert gate.window_for(dates, 0.1, "2020-08-01", "2020-07-01").start == "2020-08-01"


def test_champion_data_end_is_its_validation_start():
    assert gate.champion_data_end({"training_data": {"validation_from": "2021-03-04"}}) == "2021-03-04"
    assert gate.champion_data_end({"training_data": {"split": "given"}}) is None


def test_figures_match_scikit_learn():
    from sklearn.metrics import brier_score_loss, roc_auc_score

    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.2).astype(np.int64)
    p = np.clip(0.2 + 0.3 * (y - 0.2) + rng.normal(0, 0.15, 2000), 0.001, 0.999)
    figures = gate.figures("3", y, p)
    assert figures.roc_auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert figures.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    rate = y.mean()
    assert figures.brier_skill == pytest.approx(1 - brier_score_loss(y, p) / brier_score_loss(y, np.full(2000, rate)))


WINDOW = gate.Window("2021-01-01", "2021-09-01", "test")


def fig(version: str, auc: float, brier: float, skill: float = 0.1) -> gate.Figures:
    return gate.Figures(version, auc, brier, skill)


def test_a_challenger_slightly_worse_than_the_champion_passes_a_clearly_worse_one_does_not():
    passes = gate.decide(fig("2", 0.700, 0.100), fig("1", 0.704, 0.100), 1000, 100, GATE, False, WINDOW)
    assert passes.promote and passes.reason.startswith("passes the gate")
    assert "1,000 rows, 100 positives" in passes.reason
    worse = gate.decide(fig("2", 0.690, 0.100), fig("1", 0.704, 0.100), 1000, 100, GATE, False, WINDOW)
    assert not worse.promote and "more than 0.005 below the champion's 0.7040" in worse.reason


def test_the_floor_holds_even_when_the_champion_is_as_bad():
    garbage = gate.decide(fig("2", 0.51, 0.1), fig("1", 0.50, 0.1), 1000, 100, GATE, False, WINDOW)
    assert not garbage.promote and "AUC 0.5100 < floor 0.55" in garbage.reason


def test_calibration_rules():
    # 6 % more Brier than the champion's: beyond the 5 % allowed
    drift = gate.decide(fig("2", 0.72, 0.106), fig("1", 0.72, 0.100), 1000, 100, GATE, False, WINDOW)
    assert not drift.promote and "Brier 0.10600 more than 5% above" in drift.reason
    assert gate.decide(fig("2", 0.72, 0.104), fig("1", 0.72, 0.100), 1000, 100, GATE, False, WINDOW).promote
    # no champion: only the absolute rules, of which the Brier skill floor is one
    alone = gate.decide(fig("1", 0.72, 0.2, skill=-0.3), None, 1000, 100, GATE, False, WINDOW)
    assert not alone.promote and "Brier skill -0.300 < -0.05" in alone.reason and "no champion" in alone.reason


def test_force_promotes_and_says_so():
    forced = gate.decide(fig("2", 0.51, 0.1), fig("1", 0.70, 0.1), 1000, 100, GATE, True, WINDOW)
    assert (
        forced.promote and forced.forced and forced.reason.startswith("promoted by --force although it fails the gate")
    )


def test_too_few_rows_or_positives_is_a_refusal_unless_forced():
    refused = gate.too_few(150, 3, GATE, False, WINDOW)
    assert not refused.promote and refused.reason.startswith("refused: too few rows to judge: 150 rows and 3 positives")
    assert gate.too_few(150, 3, GATE, True, WINDOW).promote
