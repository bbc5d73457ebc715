"""Bad requests a clumsy or hostile client sends (issue 13, items 3, 7 and 10): each is a short
JSON error with a request id, never a 500, never a long echo of the input."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.api.conftest import API_KEY, CUSTOMERS, deploy, teardown_deployment

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_BODY = 4096  # small for the test: the default is api.max_body_bytes


@pytest.fixture(scope="module")
def deployed(request, tmp_path_factory, model_server):
    deployment = deploy(
        tmp_path_factory.mktemp("bad-input"), request, "sqlite", "sqlite", model_server.url, max_body_bytes=MAX_BODY
    )
    yield deployment
    teardown_deployment(deployment)


def assert_short_error(response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"detail", "request_id"}
    assert body["request_id"] and body["request_id"] == response.headers["X-Request-ID"]
    assert len(response.content) < 4096, f"{len(response.content)} bytes: the input is echoed"
    return body


def raw_post(deployed, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """POST with http.client: the exact bytes (json= would refuse NaN) and headers as given."""
    connection = http.client.HTTPConnection("127.0.0.1", deployed.api.port, timeout=30)
    try:
        connection.request(
            "POST", "/predict", body=body, headers={**AUTH, "Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# Item 7: numbers JSON has no place for ------------------------------------------------------------
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_ids_are_422_with_a_request_id(deployed, number):
    response = deployed.client.post(
        "/predict", content=f'{{"ids":[{number}]}}', headers={**AUTH, "Content-Type": "application/json"}
    )
    body = assert_short_error(response, 422)
    assert body["detail"][0]["loc"] == ["body", "ids", 0]
    json.loads(response.text)  # strict JSON: no NaN or Infinity in the answer either
    assert "NaN" not in response.text.replace('"NaN"', "") and "Infinity" not in response.text.replace('"Infinity"', "")


# Item 3: bodies beyond api.max_body_bytes, and 422s that quote a huge input --------------------------------
def test_a_body_over_the_limit_with_content_length_is_413_before_it_is_read(deployed):
    body = json.dumps({"ids": [CUSTOMERS[0]] * 2000}).encode()
    assert len(body) > MAX_BODY
    status, _, content = raw_post(deployed, body, {})
    assert status == 413
    answer = json.loads(content)
    assert set(answer) == {"detail", "request_id"} and answer["request_id"]
    assert f"{MAX_BODY} bytes" in answer["detail"] and "api.max_body_bytes" in answer["detail"]


def test_a_chunked_body_over_the_limit_is_413(deployed):
    def chunks():
        yield b'{"ids": ['
        for _ in range(1000):
            yield b"5008804, "
        yield b"5008804]}"

    response = deployed.client.post("/predict", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert "content-length" not in response.request.headers  # really streamed
    body = assert_short_error(response, 413)
    assert "api.max_body_bytes" in body["detail"]


def test_a_lying_content_length_is_refused(deployed):
    status, _, _ = raw_post(deployed, b'{"ids": [5008804]}', {"Content-Length": "abc"})
    assert status in (400, 413)


def test_a_body_at_the_limit_is_still_served(deployed):
    body = json.dumps({"ids": [CUSTOMERS[0]]}).encode()
    padded = body[:-1] + b" " * (MAX_BODY - len(body)) + b"}"
    assert len(padded) == MAX_BODY
    status, _, content = raw_post(deployed, padded, {})
    assert status == 200, content[:300]


def test_a_422_quotes_only_a_short_excerpt_of_a_long_input(deployed):
    long_id = "7" * 3500
    response = deployed.client.post(
        "/predict", content=f'{{"ids":["{long_id}"]}}', headers={**AUTH, "Content-Type": "application/json"}
    )
    body = assert_short_error(response, 422)
    excerpt = body["detail"][0]["input"]
    assert (
        isinstance(excerpt, str) and len(excerpt) <= 120 and excerpt.startswith("777") and "3,500 characters" in excerpt
    )


def test_a_422_lists_at_most_a_few_problems(deployed):
    response = deployed.post("/predict", {"ids": ["x"] * 100})
    body = assert_short_error(response, 422)
    assert len(body["detail"]) <= 11
    assert "more problems" in body["detail"][-1]["msg"]


def test_a_422_keeps_short_inputs_as_they_were(deployed):
    body = assert_short_error(deployed.post("/predict", {"ids": [1.5]}), 422)
    assert body["detail"][0]["input"] == 1.5 and body["detail"][0]["type"] == "int_from_float"


# Item 10: ids are what they look like ----------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["+5008804", "%205008804", "5008804%20", "5008804.0", "5_008_804", "%EF%BC%95008804", "0x4c6d24"]
)
def test_lax_ids_in_the_path_are_422(deployed, path):
    response = deployed.get(f"/predict/{path}")
    body = assert_short_error(response, 422)
    assert body["detail"][0]["loc"] == ["path", "id"]


def test_a_plain_id_in_the_path_still_works(deployed):
    response = deployed.get(f"/predict/{CUSTOMERS[0]}")
    assert response.status_code == 200 and response.json()["id"] == CUSTOMERS[0]
    assert deployed.get("/predict/0").status_code == 404  # the smallest id: valid, absent


def test_deeply_nested_json_is_a_short_4xx(deployed):
    depth = 2000  # within api.max_body_bytes = 4096
    body = b'{"ids": ' + b"[" * depth + b"]" * depth + b"}"
    status, _, content = raw_post(deployed, body, {})
    assert status in (400, 422), content[:300]
    answer = json.loads(content)
    assert answer["request_id"] and len(content) < 4096


def test_an_unknown_query_parameter_is_a_422_not_ignored(deployed):
    misspelt = deployed.client.get(f"/predict/{CUSTOMERS[0]}?explian=true", headers=AUTH)
    body = assert_short_error(misspelt, 422)
    assert body["detail"][0]["loc"] == ["query", "explian"]
    assert "unknown query parameter (this route takes explain)" in body["detail"][0]["msg"]
    assert deployed.client.post("/predict?explain=true", json={"ids": [CUSTOMERS[0]]}, headers=AUTH).status_code == 422
    assert deployed.client.get(f"/predict/{CUSTOMERS[0]}?explain=true", headers=AUTH).status_code == 200
