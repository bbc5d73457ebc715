"""Contract tests of the container routes with real HTTP against a started server (model A, version "7")."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from features.contract import FEATURE_COLUMNS
from serving.environment import PAYLOAD_LIMIT_BYTES
from serving.tree_eval import ROWS_LIMIT as FAST_PATH_MAX_ROWS
from tests.serving.conftest import reference_predict, synthetic_features


@pytest.fixture(scope="module")
def client(dir_server):
    with httpx.Client(base_url=dir_server.url, timeout=30) as session:
        yield session


def _csv(matrix: np.ndarray) -> bytes:
    lines = [",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in matrix]
    return ("\n".join(lines) + "\n").encode()


def _values(text: str) -> np.ndarray:
    return np.array([float(line) for line in text.splitlines()])


def _no_internals(answer: httpx.Response) -> None:
    assert "Traceback" not in answer.text and 'File "' not in answer.text


def test_ping_is_200_with_an_empty_body(client):
    answer = client.get("/ping")
    assert answer.status_code == 200
    assert answer.content == b""


def test_single_csv_row_matches_xgboost_and_carries_the_version(client, model_a):
    row = synthetic_features(1, seed=5)
    answer = client.post("/invocations", content=_csv(row), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["x-model-version"] == "7"
    assert answer.headers["x-amzn-sagemaker-custom-attributes"] == "model_version=7; threshold=0.25"
    assert answer.text.endswith("\n") and len(answer.text.splitlines()) == 1
    np.testing.assert_allclose(_values(answer.text), reference_predict(model_a, row), atol=1e-6)


@pytest.mark.parametrize("rows", [3, FAST_PATH_MAX_ROWS, FAST_PATH_MAX_ROWS + 1, 2000])
def test_many_csv_rows_one_value_per_line_in_order(client, model_a, rows):
    matrix = synthetic_features(rows, seed=rows)
    answer = client.post("/invocations", content=_csv(matrix), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200
    # Bit for bit, on both sides of the fast path's row limit: a row's answer must not depend on its neighbours.
    np.testing.assert_array_equal(_values(answer.text), reference_predict(model_a, matrix).astype(np.float64))


def test_json_instances_by_name_and_json_answer(client, model_a):
    matrix = synthetic_features(5, seed=11)
    instances = [
        {name: (None if np.isnan(v) else float(v)) for name, v in zip(reversed(FEATURE_COLUMNS), reversed(row))}
        for row in matrix
    ]
    answer = client.post("/invocations", json={"instances": instances}, headers={"Accept": "application/json"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    scores = [item["score"] for item in answer.json()["predictions"]]
    np.testing.assert_allclose(scores, reference_predict(model_a, matrix), atol=1e-6)


def test_json_list_of_rows_answers_csv_by_default(client, model_a):
    matrix = synthetic_features(4, seed=12)
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in matrix]
    answer = client.post("/invocations", content=json.dumps(rows), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    np.testing.assert_allclose(_values(answer.text), reference_predict(model_a, matrix), atol=1e-6)


def test_no_content_type_is_read_as_csv(client):
    answer = client.post("/invocations", content=b"1,2000,40,3,1")
    assert answer.status_code == 200
    assert len(answer.text.splitlines()) == 1


@pytest.mark.parametrize(
    "accept, media", [("*/*", "text/csv"), ("application/json;q=0.9, text/csv;q=0.1", "application/json")]
)
def test_accept_negotiation(client, accept, media):
    answer = client.post(
        "/invocations", content=b"1,2000,40,3,1", headers={"Content-Type": "text/csv", "Accept": accept}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media)


def test_406_comes_before_reading_the_body(client):
    # A malformed body with an unacceptable Accept is a 406, not a 400: negotiation runs first.
    answer = client.post(
        "/invocations", content=b"garbage", headers={"Content-Type": "text/csv", "Accept": "text/html"}
    )
    assert answer.status_code == 406
    assert "text/csv or application/json" in answer.text
    _no_internals(answer)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "text/libsvm", "application/x-npy"]
)
def test_415_for_content_types_it_does_not_read(client, content_type):
    answer = client.post("/invocations", content=b"1,2,3,4,5", headers={"Content-Type": content_type})
    assert answer.status_code == 415
    assert "send text/csv or application/json" in answer.text
    _no_internals(answer)


@pytest.mark.parametrize(
    "body, content_type, fragment",
    [
        (b"1,2,3,4", "text/csv", "row 1 has 4 fields, the model takes 5"),
        (b"1,2,x,4,5", "text/csv", "row 1, field 3 (age): 'x' is not a number"),
        (b"{broken", "application/json", "not valid JSON"),
        (b'{"instances": [{"salary": 1}]}', "application/json", "unknown feature 'salary'"),
        (b'{"instances": [[1, 2, "three", 4, 5]]}', "application/json", "feature age: 'three' is not a number"),
        (b"", "text/csv", "body is empty"),
    ],
)
def test_400_names_the_problem(client, body, content_type, fragment):
    answer = client.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400
    assert fragment in answer.text
    assert len(answer.text.strip().splitlines()) == 1
    _no_internals(answer)


def test_413_over_six_megabytes_by_content_length(client):
    answer = client.post("/invocations", content=b"1" * (PAYLOAD_LIMIT_BYTES + 1), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 413
    assert "6 MB" in answer.text


def test_413_over_six_megabytes_when_streamed_without_a_length(client):
    def chunks():
        for _ in range(7):
            yield b"1" * (1024 * 1024)

    answer = client.post("/invocations", content=chunks(), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 413


def test_server_still_answers_after_bad_requests(client):
    for body in (b"\xff\xfe", b"1,2", b"," * 100):
        client.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert client.post("/invocations", content=b"1,2000,40,3,1").status_code == 200


def test_other_routes_and_methods(client):
    assert client.get("/invocations").status_code == 405
    assert client.get("/nothing-here").status_code == 404
    parameters = client.get("/execution-parameters")
    assert parameters.json() == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def test_admin_routes_need_the_token(client):
    assert client.get("/admin/model").status_code == 401
    assert client.get("/admin/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = client.get("/admin/model", headers={"Authorization": "Bearer test-admin-token"})
    assert answer.status_code == 200
    described = answer.json()["model"]
    assert described["version"] == "7" and described["fast_path"] is True
    assert described["feature_names"] == list(FEATURE_COLUMNS)
