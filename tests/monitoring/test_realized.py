"""Realized quality: a hand-built prediction log joined with a later, hand-written credit file.

The later CSV goes through the real feature job; its training table holds the outcomes. The
expected matches and figures below are worked out by hand from the matching rule (the first
accepted loan of the customer dated on or after the prediction's as_of, lowest loan_id on a
tie; one prediction per model version, customer and as_of: the last served).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pandas as pd
import pyarrow.parquet as pq
import pytest

from api.prediction_log import sqlite_log_path
from api.prediction_log.base import LogEntry
from api.prediction_log.sqlite_log import SqlitePredictionLog
from monitoring import drift_step, realized
from tests.monitoring.conftest import own_settings, run_features

LATER_CSV = """loan_id,id,loan_date,loan_amount,birthday,job_start_date,flag_own_car,status
1,1001001,2024-01-10,1000,1980-05-05,2010-01-01,Y,0
2,1001001,2024-03-01,1000,1980-05-05,2010-01-01,Y,1
3,1001001,2024-03-01,1000,1980-05-05,2010-01-01,Y,0
4,1001002,2023-12-01,1000,1981-05-05,2011-01-01,N,1
5,1001003,2024-02-01,1000,1982-05-05,2012-01-01,N,1
6,1001004,2024-02-15,1000,1983-05-05,2013-01-01,Y,0
7,1001005,2024-05-01,1000,1984-05-05,2014-01-01,N,0
8,1001006,2024-02-20,1000,1985-05-05,2015-01-01,Y,1
"""

# (ts, customer, probability, model version, as_of)
LOG = [
    (
        "2024-02-01T09:00:00.000000Z",
        1001001,
        0.8,
        "1",
        "2024-02-01",
    ),  # superseded by the next one (same version, customer, as_of)
    (
        "2024-02-01T10:00:00.000000Z",
        1001001,
        0.9,
        "1",
        "2024-02-01",
    ),  # -> loans 2 and 3 on 2024-03-01: loan 2, status 1
    ("2024-01-01T10:00:00.000000Z", 1001001, 0.3, "1", "2024-01-01"),  # -> loan 1 on 2024-01-10, status 0
    ("2024-02-01T11:00:00.000000Z", 1001002, 0.6, "1", "2024-02-01"),  # only a loan before as_of: unmatched
    ("2024-02-01T12:00:00.000000Z", 1001003, 0.5, "1", "2024-02-01"),  # -> loan 5 dated as_of itself, status 1
    ("2024-02-01T13:00:00.000000Z", 1001004, 0.6, "1", "2024-02-01"),  # -> loan 6, status 0
    ("2024-02-02T10:00:00.000000Z", 1001005, 0.2, "2", "2024-02-01"),  # -> loan 7, status 0
    ("2024-02-02T11:00:00.000000Z", 1001004, 0.4, "2", "2024-02-01"),  # -> loan 6, status 0
    ("2024-02-02T12:00:00.000000Z", 1001003, 0.7, "2", "2024-02-01"),  # -> loan 5, status 1
]
EXPECTED_MATCHES = [  # (version, customer, as_of, outcome loan, outcome, probability)
    ("1", 1001001, "2024-01-01", 1, 0, 0.3),
    ("1", 1001001, "2024-02-01", 2, 1, 0.9),
    ("1", 1001003, "2024-02-01", 5, 1, 0.5),
    ("1", 1001004, "2024-02-01", 6, 0, 0.6),
    ("2", 1001003, "2024-02-01", 5, 1, 0.7),
    ("2", 1001004, "2024-02-01", 6, 0, 0.4),
    ("2", 1001005, "2024-02-01", 7, 0, 0.2),
]
# Model 1: positives 0.9, 0.5 against negatives 0.3, 0.6: 3 of 4 pairs ordered -> AUC 0.75;
# Brier ((0.3)^2 + (0.1)^2 + (0.5)^2 + (0.6)^2) / 4 = 0.71 / 4. Model 2: AUC 1; Brier (0.2^2 + 0.4^2 + 0.3^2) / 3.
EXPECTED_QUALITY = {
    "1": {
        "served_predictions": 6,
        "distinct_predictions": 5,
        "matched_predictions": 4,
        "positives": 2,
        "roc_auc": 0.75,
        "brier": 0.71 / 4,
    },
    "2": {
        "served_predictions": 3,
        "distinct_predictions": 3,
        "matched_predictions": 3,
        "positives": 1,
        "roc_auc": 1.0,
        "brier": 0.29 / 3,
    },
}


def served_frame() -> pd.DataFrame:
    return pd.DataFrame(LOG, columns=["ts", "customer_id", "probability", "model_version", "snapshot_as_of"])


def test_join_on_hand_built_loans():
    loans = pd.read_csv(pd.io.common.StringIO(LATER_CSV))[["id", "loan_id", "loan_date", "status"]]
    matched = realized.match(served_frame(), loans)
    got = [
        (r.model_version, r.customer_id, r.snapshot_as_of, r.outcome_loan_id, r.outcome, r.probability)
        for r in matched.itertuples()
    ]
    assert got == EXPECTED_MATCHES


def test_too_few_matches_and_one_class_give_no_auc(spark_settings):
    settings = spark_settings.monitoring
    loans = pd.DataFrame({"id": [7, 8], "loan_id": [1, 2], "loan_date": ["2024-03-01", "2024-03-01"], "status": [0, 0]})
    served = pd.DataFrame(
        [
            ("2024-02-01T00:00:00.000000Z", 7, 0.1, "1", "2024-02-01"),
            ("2024-02-01T00:00:00.000000Z", 8, 0.2, "1", "2024-02-01"),
        ],
        columns=["ts", "customer_id", "probability", "model_version", "snapshot_as_of"],
    )
    [row] = realized.quality(served, loans, settings)  # min_matched 30 by default
    assert row["status"] == "too_few_matched" and row["roc_auc"] is None and row["matched_predictions"] == 2
    [row] = realized.quality(served, loans, settings.model_copy(update={"min_matched": 2}))
    assert row["status"] == "one_class" and row["roc_auc"] is None and row["brier"] == pytest.approx((0.01 + 0.04) / 2)


def test_drift_step_joins_the_log_with_the_later_file(spark, spark_settings, tmp_path):
    settings = own_settings(spark_settings, tmp_path, monitoring={"min_matched": 3, "register_hive": False})
    (tmp_path / "later.csv").write_text(LATER_CSV)
    manifest = run_features(spark, settings, tmp_path / "later.csv", dt.date(2024, 6, 1))
    log = SqlitePredictionLog(sqlite_log_path(settings))
    log.write_batch(
        [
            LogEntry(ts, uuid.uuid4().hex, customer, {}, p, 0, 0.5, version, "run-0", as_of, 1.0)
            for ts, customer, p, version, as_of in LOG
        ]
    )
    log.close()

    loans = pq.read_table(
        manifest["outputs"]["training"]["uri"], columns=["id", "loan_id", "loan_date", "status"]
    ).to_pandas()
    got = [
        (r.model_version, r.customer_id, r.snapshot_as_of, r.outcome_loan_id, r.outcome, r.probability)
        for r in realized.match(served_frame(), loans).itertuples()
    ]
    assert got == EXPECTED_MATCHES

    outcome = drift_step(settings, manifest["run_id"], spark=spark)
    quality = {q["model_version"]: q for q in outcome.quality}
    assert set(quality) == set(EXPECTED_QUALITY)
    for version, expected in EXPECTED_QUALITY.items():
        for key, value in expected.items():
            assert quality[version][key] == pytest.approx(value), (version, key)
    # No production model: every feature comparison says so, and nothing alerts.
    assert not outcome.alert and outcome.reason == "no alert"
    assert {r["status"] for r in outcome.drift} == {"no_reference"}
    assert any("no production model" in p for p in outcome.problems)
