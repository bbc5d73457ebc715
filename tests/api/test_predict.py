"""GET /predict/{id} and POST /predict against the real model server, per (store, log) backend pair."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import (
    AS_OF,
    CUSTOMERS,
    MODEL_VERSION,
    RUN_ID,
    expected_features,
    read_metric,
    reference_probabilities,
)


def test_predict_one_answers_the_issue_fields_with_independent_values(deployment, model_dir):
    customer = CUSTOMERS[17]
    response = deployment.get(f"/predict/{customer}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "id",
        "probability",
        "label",
        "threshold",
        "model_version",
        "features",
        "feature_snapshot",
        "request_id",
    }
    features = expected_features()[customer]
    assert body["id"] == customer
    assert body["features"] == features  # exactly the stored values, ints as ints, missing as null
    assert list(body["features"]) == list(features)
    reference = float(reference_probabilities(model_dir, [features])[0])
    assert body["probability"] == pytest.approx(reference, abs=1e-6)
    threshold = json.loads((model_dir / "model-metadata.json").read_text())["threshold"]
    assert body["threshold"] == threshold
    assert body["label"] == int(reference >= threshold)
    assert body["model_version"] == MODEL_VERSION
    assert body["feature_snapshot"] == {"run_id": RUN_ID, "as_of": AS_OF}
    assert body["request_id"] == response.headers["X-Request-ID"] and len(body["request_id"]) >= 16


def test_labels_follow_the_models_threshold_on_both_sides(deployment, model_dir):
    features = expected_features()
    answers = [deployment.get(f"/predict/{c}").json() for c in CUSTOMERS[:60]]
    references = reference_probabilities(model_dir, [features[c] for c in CUSTOMERS[:60]])
    labels = {a["label"] for a in answers}
    assert labels == {0, 1}, "the fixture data should put customers on both sides of the threshold"
    for answer, reference in zip(answers, references):
        assert answer["probability"] == pytest.approx(float(reference), abs=1e-6)
        assert answer["label"] == int(answer["probability"] >= answer["threshold"])


def test_a_request_id_sent_by_the_client_is_kept(deployment):
    response = deployment.get(f"/predict/{CUSTOMERS[0]}", headers={"X-Request-ID": "client-trace-42"})
    assert response.headers["X-Request-ID"] == "client-trace-42"
    assert response.json()["request_id"] == "client-trace-42"
    # An unusable one (too long, odd characters) is replaced, not echoed.
    response = deployment.get(f"/predict/{CUSTOMERS[0]}", headers={"X-Request-ID": "bad id with spaces"})
    assert response.json()["request_id"] != "bad id with spaces"


def test_an_unknown_id_is_404_with_a_clear_message(deployment):
    response = deployment.get("/predict/1234")
    assert response.status_code == 404
    body = response.json()
    assert "customer 1234 is not in the current feature snapshot" in body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize("bad", ["abc", "1.5", "5008804x", "99999999999999999999", str(2**53), "-1", "%20"])
def test_a_non_integer_or_out_of_range_id_is_422(deployment, bad):
    response = deployment.get(f"/predict/{bad}")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"][0]["loc"] == ["path", "id"]
    assert "Traceback" not in response.text


def test_post_predict_scores_a_batch_in_one_model_call(deployment, model_dir):
    before = read_metric(deployment.get("/metrics").text, "api_model_call_duration_seconds_count")
    asked = [CUSTOMERS[3], 42, CUSTOMERS[99], CUSTOMERS[3], 7, CUSTOMERS[0]]
    response = deployment.post("/predict", {"ids": asked})
    assert response.status_code == 200, response.text
    body = response.json()
    after = read_metric(deployment.get("/metrics").text, "api_model_call_duration_seconds_count")
    assert after - before == 1
    found = [i for i in asked if i in set(CUSTOMERS)]
    assert [p["id"] for p in body["predictions"]] == found  # asked order, duplicates kept
    assert body["not_found"] == [42, 7]
    features = expected_features()
    references = reference_probabilities(model_dir, [features[i] for i in found])
    for prediction, reference in zip(body["predictions"], references):
        assert prediction["probability"] == pytest.approx(float(reference), abs=1e-6)
        assert prediction["features"] == features[prediction["id"]]
        assert prediction["feature_snapshot"] == {"run_id": RUN_ID, "as_of": AS_OF}
        assert prediction["model_version"] == MODEL_VERSION
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_post_predict_with_only_unknown_ids_makes_no_model_call(deployment):
    before = read_metric(deployment.get("/metrics").text, "api_model_call_duration_seconds_count")
    response = deployment.post("/predict", {"ids": [1, 2]})
    assert response.status_code == 200
    assert response.json()["predictions"] == [] and response.json()["not_found"] == [1, 2]
    assert read_metric(deployment.get("/metrics").text, "api_model_call_duration_seconds_count") == before


@pytest.mark.parametrize(
    "body",
    [
        {"ids": []},
        {"ids": list(range(101))},
        {"ids": ["a"]},
        {"ids": [1.5]},
        {},
        {"ids": [1], "extra": 1},
        [1, 2],
        {"ids": [2**53]},
        {"ids": [-1]},
        {"ids": [False]},
        {"ids": ["5008804"]},
        {"ids": None},
    ],
)
def test_post_predict_refuses_bad_bodies_with_422(deployment, body):
    response = deployment.post("/predict", body)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_post_predict_takes_exactly_max_batch_ids(deployment):
    ids = CUSTOMERS[: deployment.settings.api.max_batch]
    response = deployment.post("/predict", {"ids": ids})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == len(ids)
