"""The drift step on real feature runs: a shifted snapshot is flagged on exactly the shifted features,
stored in Parquet and Hive, exported to /metrics with the same values, and rendered in the report."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.prediction_log import sqlite_log_path
from api.prediction_log.base import LogEntry
from api.prediction_log.sqlite_log import SqlitePredictionLog
from configuration.settings import REPO_ROOT
from features.contract import FEATURE_COLUMNS
from features.sample_data import generate
from monitoring import drift_step, latest, report_html
from monitoring.store import result_uri
from tests.browser import chromium
from tests.api.conftest import make_model_dir
from tests.monitoring.conftest import own_settings, run_features, shifted

AS_OF = dt.date(2021, 9, 18)
SHIFTED = {"age", "avg_amount_loans_previous"}  # ages +15 years, amounts x3 (the average of earlier amounts)
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def register_production_model(settings, run_id: str, tmp) -> tuple[str, np.ndarray]:
    """A small real model trained 'on' snapshot run_id, with validation scores, registered and promoted."""
    from training import artifact
    from training.registry import open_registry

    model_dir = make_model_dir(tmp / "model")
    metadata = artifact.read_metadata(model_dir)
    metadata["training_data"] = {**metadata["training_data"], "run_id": run_id}
    artifact.write_metadata(
        model_dir, {k: v for k, v in metadata.items() if k not in ("format_version", "model_sha256")}
    )
    scores = np.random.default_rng(5).beta(1.2, 30, 2000)
    artifact.write_validation_scores(model_dir, scores, (np.random.default_rng(6).random(2000) < scores).astype(int))
    registry = open_registry(settings)
    version = registry.register(artifact.pack(model_dir, tmp / "model.tar.gz"), artifact.read_metadata(model_dir))
    registry.promote(version)
    return version, scores


@pytest.fixture(scope="module")
def world(spark, spark_settings, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring-world")
    settings = own_settings(spark_settings, tmp)
    raw, _ = generate(rows=3000, seed=21)
    raw.to_csv(tmp / "a.csv", index=False)
    shifted(raw).to_csv(tmp / "b.csv", index=False)
    first = run_features(spark, settings, tmp / "a.csv", AS_OF)
    version, _ = register_production_model(settings, first["run_id"], tmp)

    # Served in the last hour: the model's own score distribution (no prediction drift), for customers of the snapshot.
    customers = pq.read_table(first["outputs"]["latest"]["uri"], columns=["id"]).column("id").to_pylist()
    served = np.random.default_rng(8).beta(1.2, 30, 600)
    log = SqlitePredictionLog(sqlite_log_path(settings))
    log.write_batch(
        [
            LogEntry(
                (NOW - dt.timedelta(minutes=50 - i * 0.05)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                uuid.uuid4().hex,
                int(customers[i % len(customers)]),
                {},
                float(p),
                int(p >= 0.05),
                0.05,
                version,
                first["run_id"],
                "2020-06-30",
                1.0,
            )
            for i, p in enumerate(served)
        ]
    )
    log.close()
    second = run_features(spark, settings, tmp / "b.csv", AS_OF)
    outcome = drift_step(settings, second["run_id"], spark=spark, now=NOW)
    return {"settings": settings, "first": first, "second": second, "outcome": outcome, "version": version}


def test_flags_exactly_the_shifted_features_in_both_comparisons(world):
    outcome = world["outcome"]
    rows = {(r["comparison"], r["feature"]): r for r in outcome.drift}
    assert set(rows) == {(c, f) for c in ("training", "latest") for f in FEATURE_COLUMNS}
    for (comparison, feature), row in rows.items():
        if feature in SHIFTED:
            assert row["status"] == "alert" and row["psi"] >= 0.25, (comparison, feature, row["psi"])
        else:  # the same loans and customers: identical distributions
            assert row["status"] == "ok" and row["psi"] == 0.0 and row["ks_statistic"] == 0.0, (comparison, feature)
    assert rows[("training", "age")]["reference_run_id"] == world["first"]["run_id"]
    assert rows[("latest", "age")]["reference_run_id"] == world["first"]["run_id"]
    assert outcome.alert
    assert outcome.reason.startswith("drift alert: ")
    assert "age PSI" in outcome.reason and "avg_amount_loans_previous PSI" in outcome.reason
    for feature in set(FEATURE_COLUMNS) - SHIFTED:
        assert f"{feature} PSI" not in outcome.reason
    assert "\n" not in outcome.reason and "\n" not in outcome.summary


def test_served_scores_like_the_validation_scores_do_not_drift(world):
    prediction = world["outcome"].prediction
    assert prediction["model_version"] == world["version"]
    assert prediction["served_rows"] == 600 and prediction["reference_rows"] == 2000
    assert prediction["status"] == "ok" and prediction["psi"] < 0.1
    assert prediction["served_positive_share"] == pytest.approx(
        np.mean(np.random.default_rng(8).beta(1.2, 30, 600) >= 0.05)
    )


def test_results_are_stored_under_the_snapshot_and_in_hive(world, spark):
    settings, run_id = world["settings"], world["second"]["run_id"]
    stored = pq.read_table(result_uri(settings, run_id, "drift")).to_pandas()
    assert len(stored) == 2 * len(FEATURE_COLUMNS) and set(stored["snapshot_run_id"]) == {run_id}
    database = settings.features.database
    hive = {
        (r["comparison"], r["feature"]): r["psi"]
        for r in spark.sql(
            f"SELECT comparison, feature, psi FROM {database}.drift WHERE snapshot_run_id = '{run_id}'"
        ).collect()
    }
    assert hive == {(r["comparison"], r["feature"]): r["psi"] for r in world["outcome"].drift}
    assert spark.sql(f"SELECT count(*) FROM {database}.prediction_drift").collect()[0][0] == 1
    assert latest(settings)["snapshot_run_id"] == run_id


def test_metrics_expose_the_stored_values(world):
    from api.main import create_app
    from tests.api.conftest import read_metric

    settings = world["settings"].model_copy(
        update={"api": world["settings"].api.model_copy(update={"auth_enabled": False})}
    )
    text = TestClient(create_app(settings)).get("/metrics").text
    for row in world["outcome"].drift:
        labels = {"feature": row["feature"], "comparison": row["comparison"]}
        assert read_metric(text, "sparkmaker_feature_drift_psi", **labels) == pytest.approx(row["psi"], rel=1e-12)
        assert read_metric(text, "sparkmaker_feature_drift_ks", **labels) == pytest.approx(
            row["ks_statistic"], rel=1e-12
        )
    assert read_metric(text, "sparkmaker_prediction_drift_psi") == pytest.approx(
        world["outcome"].prediction["psi"], rel=1e-12
    )
    assert read_metric(text, "sparkmaker_drift_alert") == 1.0
    for quality in world["outcome"].quality:
        version = quality["model_version"]
        assert (
            read_metric(text, "sparkmaker_realized_matched_predictions", model_version=version)
            == quality["matched_predictions"]
        )
        if quality["roc_auc"] is not None:
            assert read_metric(text, "sparkmaker_realized_roc_auc", model_version=version) == pytest.approx(
                quality["roc_auc"]
            )
    assert world["second"]["run_id"] not in text and world["first"]["run_id"] not in text  # no snapshot ids as labels


def test_report_holds_each_section_and_no_outside_resource(world):
    page = report_html(world["settings"])
    for section in ("summary", "problems", "feature-drift", "prediction-drift", "realized-quality"):
        assert f'id="{section}"' in page
    assert page.count("data:image/png;base64,") >= 2 * len(FEATURE_COLUMNS) + 1  # every histogram and the score plot
    assert "http://" not in page and "https://" not in page
    assert json.dumps(world["outcome"].reason)[1:-1].split(";")[0] in page


@pytest.mark.timeout(180)
def test_report_opens_in_a_headless_browser_with_every_section(world, tmp_path):
    out = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "monitoring", "report", "--snapshot", world["second"]["run_id"], "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "SPARKMAKER_PATHS__LAKE": world["settings"].paths.lake,
            "SPARKMAKER_PATHS__STATE_DIR": world["settings"].paths.state_dir,
        },
    )
    assert result.returncode == 0, result.stderr
    assert f"snapshot {world['second']['run_id']}: feature drift 4 alert, 6 ok" in result.stdout  # the one-line summary
    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(out.as_uri())
        for section, heading in (
            ("summary", "Monitoring report"),
            ("problems", "What could not be measured"),
            ("feature-drift", "Feature drift"),
            ("prediction-drift", "Prediction drift"),
            ("realized-quality", "Realized quality"),
        ):
            assert page.locator(f"#{section}").is_visible(), section
            assert heading in page.locator(f"#{section}").inner_text()
        assert "ALERT" in page.locator("#summary .banner").inner_text()
        images = page.locator("#feature-drift img")
        assert images.count() == 2 * len(FEATURE_COLUMNS)
        # Every plot decoded: an image that failed to load has no natural width.
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        alert_rows = page.locator("#feature-drift td.alert").count()
        assert alert_rows == 4  # age and avg_amount_loans_previous in both comparisons
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert all(url.startswith(("file://", "data:")) for url in requests), requests  # nothing fetched from outside


def test_the_lifecycle_retrains_on_an_alert_and_records_why(world):
    """The pipeline's own drift step calls monitoring for real; its alert is the reason to train a challenger."""
    from pipeline.steps import _snapshot, drift, retrain_reason

    settings = world["settings"]
    snapshot = _snapshot(world["second"], True, "computed")
    verdict = drift(settings, snapshot)
    assert verdict.checked and verdict.alert, verdict
    assert "age" in verdict.reason and "avg_amount_loans_previous" in verdict.reason
    reason, production = retrain_reason(settings, snapshot, verdict, force=False)
    assert production == world["version"]
    assert reason == f"drift: {verdict.reason}"
