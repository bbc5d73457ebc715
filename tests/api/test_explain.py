"""Explained predictions: ?explain=true and "explain": true, through both model endpoints, logged with reasons.

The expected contributions are XGBoost's own `pred_contribs` on a booster loaded here from
the model file (independent of the server and the API); the reasons are checked against
hand-written sentences, and the log against what the API answered.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import uuid

import numpy as np
import pytest

from api.prediction_log import LogEntry
from features.contract import FEATURE_COLUMNS
from features.reasons import REASONS, reasons_for
from tests.api.conftest import CUSTOMERS, deploy, expected_features, reference_probabilities, teardown_deployment
from tests.api.test_prediction_log import entry, make_log
from tests.api.test_sagemaker_endpoint import aws_env, sagemaker_sections  # noqa: F401 (a fixture)


def reference_contributions(model_dir, features: dict) -> np.ndarray:
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray((model_dir / "xgboost-model").read_bytes()))
    row = np.array([[np.nan if features[n] is None else features[n] for n in FEATURE_COLUMNS]], dtype=np.float32)
    return booster.predict(
        xgboost.DMatrix(row, missing=np.nan, feature_names=list(FEATURE_COLUMNS)), pred_contribs=True
    )[0]


def check_explained(body: dict, model_dir) -> None:
    features = expected_features()[body["id"]]
    reference = reference_contributions(model_dir, features)
    explanation = body["explanation"]
    assert list(explanation["contributions"]) == list(FEATURE_COLUMNS)
    got = [explanation["contributions"][n] for n in FEATURE_COLUMNS]
    np.testing.assert_allclose(got, reference[:-1], rtol=1e-5, atol=1e-6)
    assert explanation["base_value"] == pytest.approx(float(reference[-1]), abs=1e-6)
    assert explanation["scale"] == "log_odds"
    p = body["probability"]
    assert p == pytest.approx(float(reference_probabilities(model_dir, [features])[0]), abs=1e-6)
    assert explanation["base_value"] + sum(got) == pytest.approx(math.log(p / (1 - p)), abs=2e-4)
    # Reasons: exactly the positive contributions, largest first, each with its table's code.
    positive = sorted(((c, n) for n, c in zip(FEATURE_COLUMNS, got) if c > 0), reverse=True)
    assert [r["feature"] for r in body["reasons"]] == [n for _, n in positive]
    codes = {r.feature: r.code for r in REASONS}
    for reason in body["reasons"]:
        assert reason["code"] == codes[reason["feature"]]
        assert reason["text"].startswith(reason["code"] + ": ")
        assert reason["contribution"] == explanation["contributions"][reason["feature"]]


@pytest.fixture(params=[("sqlite", "sqlite"), ("redis", "postgres")], ids=lambda p: f"store={p[0]}-log={p[1]}")
def explained_deployment(request, tmp_path, model_server):
    store_kind, log_kind = request.param
    deployed = deploy(
        tmp_path,
        request,
        store_kind,
        log_kind,
        model_server.url,
        prediction_log_table=f"console_log_{uuid.uuid4().hex[:8]}",
    )
    yield deployed
    teardown_deployment(deployed)


def test_get_with_explain_adds_exact_contributions_and_reasons_and_logs_them(explained_deployment, model_dir):
    deployed = explained_deployment
    plain = deployed.get(f"/predict/{CUSTOMERS[3]}").json()
    assert "explanation" not in plain and "reasons" not in plain  # without the switch, nothing changes
    answers = [deployed.get(f"/predict/{c}", params={"explain": "true"}) for c in CUSTOMERS[:12]]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        check_explained(answer.json(), model_dir)
    assert any(a.json()["reasons"] for a in answers)

    from api.prediction_log import open_prediction_log

    backend = open_prediction_log(deployed.settings)
    deadline = time.monotonic() + 10
    while backend.count() < 13 and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = backend.recent(13)
    assert logged[0].reasons is None  # the plain answer
    assert [e.reasons for e in logged[1:]] == [a.json()["reasons"] for a in answers]
    assert [e.request_id for e in logged[1:]] == [a.json()["request_id"] for a in answers]
    backend.close()


def test_post_with_explain_explains_every_prediction(explained_deployment, model_dir):
    response = explained_deployment.post("/predict", {"ids": [CUSTOMERS[20], 1, CUSTOMERS[21]], "explain": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["not_found"] == [1]
    assert [p["id"] for p in body["predictions"]] == [CUSTOMERS[20], CUSTOMERS[21]]
    for prediction in body["predictions"]:
        check_explained(prediction, model_dir)
    plain = explained_deployment.post("/predict", {"ids": [CUSTOMERS[20]]}).json()
    assert "explanation" not in plain["predictions"][0]


def test_explain_must_be_a_boolean(explained_deployment):
    assert explained_deployment.post("/predict", {"ids": [CUSTOMERS[0]], "explain": "yes"}).status_code == 422
    assert explained_deployment.get(f"/predict/{CUSTOMERS[0]}", params={"explain": "perhaps"}).status_code == 422


def test_the_sagemaker_endpoint_passes_the_switch_through(request, tmp_path, model_server, model_dir, aws_env):  # noqa: F811
    deployed = deploy(
        tmp_path,
        request,
        "sqlite",
        "sqlite",
        "http://unused",
        model_endpoint="sagemaker",
        sections=sagemaker_sections(model_server.url),
    )
    try:
        answer = deployed.get(f"/predict/{CUSTOMERS[5]}", params={"explain": "true"})
        assert answer.status_code == 200, answer.text
        check_explained(answer.json(), model_dir)
    finally:
        teardown_deployment(deployed)


def test_the_schema_states_additivity(explained_deployment):
    schema = explained_deployment.client.get("/openapi.json").json()
    explanation = schema["components"]["schemas"]["Explanation"]
    assert "logit(probability)" in explanation["description"]


def test_reason_sentences():
    features = {
        "nb_previous_loans": 28,
        "avg_amount_loans_previous": 2405.5,
        "age": None,
        "years_on_the_job": 1,
        "flag_own_car": 0,
    }
    contributions = {
        "nb_previous_loans": 0.4,
        "avg_amount_loans_previous": -0.1,
        "age": 0.05,
        "years_on_the_job": 0.4,
        "flag_own_car": 0.2,
    }
    assert [r["text"] for r in reasons_for(features, contributions)] == [
        "R01: number of previous loans (28)",  # a tie with R04: contract order
        "R04: years on the current job (1)",
        "R05: does not own a car",
        "R03: age not known",
    ]
    assert reasons_for(features, dict.fromkeys(FEATURE_COLUMNS, -1.0)) == []
    assert [r.code for r in REASONS] == ["R01", "R02", "R03", "R04", "R05"]  # stable: never renumber


# The log: a reasons column, and logs written before it keep working -----------------------------
OLD_SQLITE = """CREATE TABLE {t} (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL, request_id TEXT NOT NULL, customer_id INTEGER NOT NULL, features TEXT NOT NULL,
    probability REAL NOT NULL, label INTEGER NOT NULL, threshold REAL NOT NULL, model_version TEXT NOT NULL,
    snapshot_run_id TEXT NOT NULL, snapshot_as_of TEXT NOT NULL, latency_ms REAL NOT NULL)"""
OLD_POSTGRES = """CREATE TABLE {t} (seq BIGSERIAL PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL, customer_id BIGINT NOT NULL, features JSONB NOT NULL,
    probability DOUBLE PRECISION NOT NULL, label SMALLINT NOT NULL, threshold DOUBLE PRECISION NOT NULL,
    model_version TEXT NOT NULL, snapshot_run_id TEXT NOT NULL, snapshot_as_of DATE NOT NULL, latency_ms DOUBLE PRECISION NOT NULL)"""
OLD_ROW = (
    "2026-01-02T03:04:05.000000Z",
    "old-1",
    5008804,
    '{"age": 40}',
    0.1,
    0,
    0.25,
    "6",
    "run-old",
    "2024-01-31",
    1.5,
)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_log_from_before_explanations_gains_the_column_and_keeps_its_rows(kind, tmp_path, request):
    table = f"console_old_{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        path = tmp_path / "log" / "predictions.sqlite"
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as conn:
            conn.execute(OLD_SQLITE.format(t=table))
            conn.execute(
                f"INSERT INTO {table} (ts, request_id, customer_id, features, probability, label, threshold, "
                "model_version, snapshot_run_id, snapshot_as_of, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                OLD_ROW,
            )
        backend = make_log(kind, tmp_path, request, table=table, path=path)
    else:
        import psycopg

        dsn = request.getfixturevalue("postgres_dsn")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(OLD_POSTGRES.format(t=table))
            conn.execute(
                f"INSERT INTO {table} (ts, request_id, customer_id, features, probability, label, threshold, "
                "model_version, snapshot_run_id, snapshot_as_of, latency_ms) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                OLD_ROW,
            )
        backend = make_log(kind, tmp_path, request, table=table)
    try:
        reasons = [
            {
                "code": "R01",
                "feature": "nb_previous_loans",
                "text": "R01: number of previous loans (3)",
                "contribution": 0.25,
            }
        ]
        new = [entry(1, reasons=reasons), entry(2)]
        backend.write_batch(new)
        rows = backend.recent(10)
        assert rows[0] == LogEntry(*OLD_ROW[:3], json.loads(OLD_ROW[3]), *OLD_ROW[4:], None)
        assert rows[1:] == new
        assert rows[1].reasons == reasons and rows[2].reasons is None
    finally:
        backend.teardown()
