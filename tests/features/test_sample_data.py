"""The generator: deterministic, independent across seeds, shaped like the real file, with its signal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from configuration.settings import REPO_ROOT
from features.contract import RAW_COLUMNS
from features.sample_data import generate


def test_same_seed_same_data_other_seed_other_data():
    a, ta = generate(5_000, seed=1)
    b, tb = generate(5_000, seed=1)
    c, _ = generate(5_000, seed=2)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ta, tb)
    assert not a["loan_amount"].equals(c["loan_amount"])


def test_shape_and_quirks_of_the_real_file():
    raw, _ = generate(60_000, seed=3)
    assert list(raw.columns) == list(RAW_COLUMNS) and len(raw) == 60_000
    customers = raw["id"].nunique()
    assert abs(customers - 60_000 / (777_715 / 36_500)) <= 2
    ids = raw["id"].astype(int)
    assert ids.between(5_008_804, 5_150_487).all()
    assert raw["loan_id"].is_unique
    assert 0.25 < (raw["occupation_type"] == "").mean() < 0.35
    sentinel = raw["job_start_date"].str.startswith("3021")
    assert (raw.loc[sentinel, "name_income_type"] == "Pensioner").all() and sentinel.mean() > 0.1
    assert (raw.loc[sentinel, "days_employed"] == "365243").all()
    assert raw.duplicated(["id", "loan_date"]).any()  # several loans of one customer on one day
    assert 0.01 < (raw["status"] == "1").mean() < 0.02
    assert (raw["birthday"].str.endswith("-02-29")).any()


def test_truth_is_the_probability_status_was_drawn_from():
    raw, truth = generate(80_000, seed=4)
    joined = raw[["loan_id", "status"]].astype(int).merge(truth, on="loan_id")
    assert len(joined) == len(raw)
    # calibrated: the mean probability matches the observed rate within sampling error
    rate, p = joined["status"].mean(), joined["p_true"].mean()
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / len(joined))
    assert roc_auc_score(joined["status"], joined["p_true"]) > 0.7


def test_dirty_rows_break_the_rules_and_the_cli_writes_both_files(tmp_path):
    out = tmp_path / "d.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "features.sample_data",
            "--rows",
            "2000",
            "--seed",
            "9",
            "--dirty",
            "0.05",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert (raw["id"] == "not-an-id").any() and (raw["loan_date"] == "2019-02-30").any()
    assert raw["loan_id"].duplicated().any()
    truth = pq.read_table(tmp_path / "d.truth.parquet").to_pandas()
    assert set(truth.columns) == {"loan_id", "p_true"}


def test_cli_refuses_bad_arguments_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "features.sample_data", "--rows", "0", "--out", str(tmp_path / "x.csv")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.strip() == "features.sample_data: error: --rows must be at least 1"
