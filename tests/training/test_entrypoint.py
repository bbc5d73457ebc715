"""The training entry point under SageMaker's contract: outputs, honest evaluation, failure sentences."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xgboost
from sklearn import metrics as sk

from features.contract import FEATURE_COLUMNS
from training import artifact, entrypoint

REPO = Path(__file__).resolve().parents[2]


def _stage(root: Path, channel: str, source: Path) -> None:
    target = root / "input" / "data" / channel
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.mkdir(parents=True)
        shutil.copy(source, target / source.name)


def _hps(root: Path, values: dict) -> None:
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(values))


def _failure(root: Path) -> str:
    return (root / "output" / "failure").read_text()


@pytest.fixture
def trained(ml_tree, training_data):
    _stage(ml_tree, "train", training_data["train"])
    _stage(ml_tree, "truth", training_data["truth"])
    _hps(ml_tree, {"data_run_id": "run-42", "data_uri": "/lake/x/training"})
    assert entrypoint.main([]) == 0
    return ml_tree


def test_model_directory_and_outputs(trained):
    files = sorted(p.name for p in (trained / "model").iterdir())
    assert files == sorted(artifact.ARTIFACT_FILES)
    for png in (artifact.ROC_FILE, artifact.CALIBRATION_FILE):
        assert (trained / "model" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metadata = artifact.verify_model_dir(trained / "model")
    assert metadata["feature_names"] == list(FEATURE_COLUMNS)
    assert metadata["learner"] == "xgboost"
    assert metadata["training_data"]["run_id"] == "run-42"
    assert metadata["training_data"]["uri"] == "/lake/x/training"
    assert isinstance(metadata["hyperparameters"]["max_depth"], int)
    assert metadata["code_version"] and metadata["created_at"].endswith("Z")
    evaluation = json.loads((trained / "output" / "data" / "evaluation.json").read_text())
    assert evaluation["metrics"] == metadata["metrics"]
    assert not (trained / "output" / "failure").exists()
    card = (trained / "model" / "model-card.md").read_text()
    assert f"{metadata['metrics']['roc_auc']:.4f}" in card and "roc.png" in card and "calibration.png" in card


def test_validation_scores_are_the_models_own_on_its_validation_rows(trained):
    # Stored for monitoring's prediction drift: one score per validation row, the same ones the metrics come from.
    metadata = artifact.verify_model_dir(trained / "model")
    scores = pq.read_table(trained / "model" / artifact.VALIDATION_SCORES_FILE).to_pandas()
    assert len(scores) == metadata["training_data"]["rows_validation"]
    assert set(scores["label"].unique()) <= {0, 1}
    assert sk.roc_auc_score(scores["label"], scores["probability"]) == pytest.approx(
        metadata["metrics"]["roc_auc"], abs=1e-9
    )


def test_time_split_and_metrics_recomputed_independently(trained, training_data):
    metadata = artifact.read_metadata(trained / "model")
    table = training_data["table"].to_pandas()
    cutoff = pd.Timestamp(metadata["training_data"]["validation_from"]).date()
    later = table["loan_date"] >= cutoff
    assert metadata["training_data"]["rows_train"] == int((~later).sum())
    assert metadata["training_data"]["rows_validation"] == int(later.sum())
    assert 0.15 < later.mean() < 0.25  # validation_fraction 0.2 of the rows, by date
    # Score the validation rows without the training code: pandas NULL -> NaN -> XGBoost missing.
    validation = table[later]
    booster = xgboost.Booster()
    booster.load_model(bytearray((trained / "model" / "xgboost-model").read_bytes()))
    x = validation[list(FEATURE_COLUMNS)].astype("float64").to_numpy()
    assert np.isnan(x).any()
    p = booster.predict(xgboost.DMatrix(x, missing=np.nan, feature_names=list(FEATURE_COLUMNS)))
    y = validation["status"].to_numpy()
    m = metadata["metrics"]
    assert m["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p), abs=1e-6)
    assert m["pr_auc"] == pytest.approx(sk.average_precision_score(y, p), abs=1e-6)
    assert m["log_loss"] == pytest.approx(sk.log_loss(y, p), abs=1e-6)
    assert m["brier"] == pytest.approx(sk.brier_score_loss(y, p), abs=1e-6)
    flagged = (p >= metadata["threshold"]).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(y, flagged).ravel()
    assert m["confusion_matrix"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert m["precision"] == pytest.approx(sk.precision_score(y, flagged))
    assert m["recall"] == pytest.approx(sk.recall_score(y, flagged))
    # The threshold maximises F1 over every candidate score.
    best = max(sk.f1_score(y, (p >= t).astype(int)) for t in np.unique(p)[:: max(1, len(np.unique(p)) // 200)])
    assert sk.f1_score(y, flagged) >= best - 1e-9
    # The ceiling: AUC of the generator's probabilities on the same validation rows.
    truth = training_data["truth_table"].to_pandas().set_index("loan_id")["p_true"]
    assert m["ceiling_roc_auc"] == pytest.approx(
        sk.roc_auc_score(y, truth.loc[validation["loan_id"]].to_numpy()), abs=1e-9
    )
    assert m["ceiling_rows"] == len(validation)
    # It learned the planted signal.
    assert m["roc_auc"] > 0.6


def test_validation_channel_replaces_the_time_split(ml_tree, training_data, tmp_path):
    table = training_data["table"]
    pq.write_table(table.slice(0, 3000), tmp_path / "train.parquet")
    pq.write_table(table.slice(3000), tmp_path / "validation.parquet")
    _stage(ml_tree, "train", tmp_path / "train.parquet")
    _stage(ml_tree, "validation", tmp_path / "validation.parquet")
    assert entrypoint.main([]) == 0
    data = artifact.read_metadata(ml_tree / "model")["training_data"]
    assert (data["rows_train"], data["rows_validation"]) == (3000, 1000)
    assert data["split"].startswith("channels:")
    assert artifact.read_metadata(ml_tree / "model")["metrics"]["ceiling_roc_auc"] is None


def test_class_weight_auto_counts_the_training_part_only(ml_tree, training_data):
    _stage(ml_tree, "train", training_data["train"])
    _hps(
        ml_tree,
        {"scale_pos_weight": "auto", "split_date": "2020-03-01", "early_stopping_rounds": "0", "num_round": "30"},
    )
    assert entrypoint.main([]) == 0
    metadata = artifact.read_metadata(ml_tree / "model")
    table = training_data["table"].to_pandas()
    train = table[table["loan_date"] < pd.Timestamp("2020-03-01").date()]
    expected = (train["status"] == 0).sum() / (train["status"] == 1).sum()
    assert metadata["hyperparameters"]["scale_pos_weight_used"] == pytest.approx(expected)
    everything = (table["status"] == 0).sum() / (table["status"] == 1).sum()
    assert expected != pytest.approx(everything)  # so the check above could fail
    # Probabilities come back on the real scale: mean prediction near the training base rate, not near 0.5.
    booster = artifact.load_booster(ml_tree / "model")
    p = booster.predict(
        xgboost.DMatrix(train[list(FEATURE_COLUMNS)].astype("float64").to_numpy(), feature_names=list(FEATURE_COLUMNS))
    )
    assert p.mean() == pytest.approx(train["status"].mean(), rel=0.35)


def _run_expecting_failure(root: Path) -> str:
    assert entrypoint.main([]) == 2
    message = _failure(root).strip()
    assert "\n" not in message and "Traceback" not in message
    assert not (root / "model" / "xgboost-model").exists()
    return message


def _table_without(training_data, tmp_path, column):
    pq.write_table(training_data["table"].drop_columns([column]), tmp_path / "x.parquet")
    return tmp_path / "x.parquet"


@pytest.mark.parametrize(
    "setup, sentence",
    [
        ("empty-channel", "channel 'train' at {root}/input/data/train holds no Parquet files"),
        ("no-train-channel", "channel 'train' is missing: {root}/input/data/train does not exist"),
        (
            "missing-feature",
            "channel 'train' lacks the column years_on_the_job: it must hold the feature job's training table",
        ),
        ("text-hyperparameter", "hyperparameter max_depth='deep' is invalid: not a whole number"),
        ("unknown-hyperparameter", "unknown hyperparameter 'depth'"),
        ("split-outside", "cannot split by loan_date at 2030-01-01"),
        ("one-class", "the validation rows (1,000 rows) hold only status = 0"),
        ("pipe-mode", "channel 'train' uses input mode Pipe"),
    ],
)
def test_each_failure_is_one_sentence_in_the_failure_file(ml_tree, training_data, tmp_path, setup, sentence):
    if setup == "empty-channel":
        (ml_tree / "input" / "data" / "train").mkdir()
    elif setup == "missing-feature":
        _stage(ml_tree, "train", _table_without(training_data, tmp_path, "years_on_the_job"))
    elif setup == "one-class":
        table = training_data["table"]
        pq.write_table(table.slice(0, 3000), tmp_path / "t.parquet")
        validation = table.slice(3000).to_pandas()
        validation["status"] = 0
        validation.to_parquet(tmp_path / "v.parquet")
        _stage(ml_tree, "train", tmp_path / "t.parquet")
        _stage(ml_tree, "validation", tmp_path / "v.parquet")
    elif setup != "no-train-channel":
        _stage(ml_tree, "train", training_data["train"])
    if setup == "text-hyperparameter":
        _hps(ml_tree, {"max_depth": "deep"})
    elif setup == "unknown-hyperparameter":
        _hps(ml_tree, {"depth": "3"})
    elif setup == "split-outside":
        _hps(ml_tree, {"split_date": "2030-01-01"})
    elif setup == "pipe-mode":
        (ml_tree / "input" / "config" / "inputdataconfig.json").write_text(
            json.dumps({"train": {"TrainingInputMode": "Pipe"}})
        )
    message = _run_expecting_failure(ml_tree)
    assert sentence.format(root=ml_tree) in message


def test_a_bug_is_reported_as_an_internal_error_with_exit_1(ml_tree, training_data, monkeypatch, capsys):
    _stage(ml_tree, "train", training_data["train"])

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(entrypoint, "fit", broken)
    assert entrypoint.main([]) == 1
    assert _failure(ml_tree).strip() == "internal error in the training code: RuntimeError: boom (see the job's log)"
    assert "Traceback" in capsys.readouterr().err  # kept for the job's log


def test_sigterm_is_reported_as_stopped(ml_tree, monkeypatch):
    def stopped_midway(env):
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(entrypoint, "run", stopped_midway)
    try:
        assert entrypoint.main([]) == 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _failure(ml_tree).strip() == "training was stopped (SIGTERM) before it finished"


def test_as_a_process_exit_status_and_stderr(ml_tree):
    (ml_tree / "input" / "data" / "train").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "training", "train"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("train: error: channel 'train' at ")
    assert "Traceback" not in result.stderr
    assert _failure(ml_tree).strip() in result.stderr
