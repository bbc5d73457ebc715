"""Bad input is a status and a one-line note, never a traceback or a made-up number."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import pandas as pd

from configuration.settings import REPO_ROOT, load_settings
from features.contract import FEATURE_COLUMNS
from monitoring import feature_drift, prediction_drift
from monitoring.step import Production, measure_predictions


def frame(rows: int, seed: int = 1, **override) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {name: rng.normal(size=rows) for name in FEATURE_COLUMNS}
    data.update(override)
    return pd.DataFrame(data)


def by_feature(rows):
    return {r["feature"]: r for r in rows}


def test_too_few_rows_are_not_compared():
    settings = load_settings().monitoring  # min_rows 100
    rows = by_feature(feature_drift.compare(frame(500), frame(99), settings))
    for row in rows.values():
        assert row["status"] == "too_few_rows" and row["psi"] is None and row["ks_statistic"] is None
        assert "99 current" in row["note"] and "monitoring.min_rows is 100" in row["note"]


def test_an_all_missing_feature_is_reported_and_alerts_only_when_it_broke():
    settings = load_settings().monitoring
    nan = np.full(200, np.nan)
    rows = by_feature(feature_drift.compare(frame(200, age=nan), frame(200, seed=2, flag_own_car=nan), settings))
    assert rows["flag_own_car"]["status"] == "alert" and rows["flag_own_car"]["psi"] is None  # had values, now none
    assert "all missing in the current sample" in rows["flag_own_car"]["note"]
    assert rows["age"]["status"] == "all_missing" and rows["age"]["psi"] is None
    assert rows["age"]["missing_share_change"] == -1.0
    assert rows["nb_previous_loans"]["psi"] is not None


def test_no_reference_says_why():
    rows = feature_drift.compare(None, frame(200), load_settings().monitoring, "no production model: train one")
    assert {r["status"] for r in rows} == {"no_reference"} and {r["note"] for r in rows} == {
        "no production model: train one"
    }


def test_per_feature_thresholds():
    settings = load_settings(monitoring={"feature_thresholds": {"age": {"warn": 20.0, "alert": 30.0}}}).monitoring
    current = frame(400, seed=3)
    current["age"] += 3  # far shifted: PSI well above 0.25 (at most 2 ln(1/EPSILON) < 20)
    current["nb_previous_loans"] += 3
    rows = by_feature(feature_drift.compare(frame(400), current, settings))
    assert rows["age"]["status"] == "ok" and rows["age"]["psi_alert"] == 30.0
    assert rows["nb_previous_loans"]["status"] == "alert"


def test_an_empty_prediction_log_is_reported(tmp_path):
    settings = load_settings(paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")})
    production = Production("3", "run-1", 0.5, pd.DataFrame({"probability": np.linspace(0, 1, 200), "label": 0}), "")
    row, quality, problems = measure_predictions(settings, "run-2", production, dt.datetime.now(dt.UTC))
    assert row["status"] == prediction_drift.NO_PREDICTIONS and row["psi"] is None
    assert quality == []
    assert any(p.startswith("the prediction log is empty") for p in problems)


def test_cli_without_a_snapshot_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "monitoring", "drift", "--lake", str(tmp_path / "lake")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no feature snapshot" in result.stderr
    assert "Traceback" not in result.stderr
