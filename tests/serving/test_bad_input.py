"""Bodies that broke the model server (issue 13, items 8, 9 and 10): each is a 4xx with one line."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import httpx
import pytest

from features.contract import FEATURE_COLUMNS
from serving.content_types import CSV, JSON
from serving.decoder import decode
from serving.environment import PAYLOAD_LIMIT_BYTES
from serving.errors import BadRequest

F = FEATURE_COLUMNS


@pytest.fixture(scope="module")
def client(dir_server):
    with httpx.Client(base_url=dir_server.url, timeout=30) as session:
        yield session


# Item 8: deep nesting -------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_is_a_bad_request(depth):
    body = b"[" * depth + b"]" * depth
    with pytest.raises(BadRequest, match="nested too deeply"):
        decode(body, JSON, F)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_over_http_is_400_not_500(client, depth):
    for body in (b"[" * depth + b"]" * depth, b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"):
        answer = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text[:300]
        assert "nested too deeply" in answer.text and len(answer.text) < 500
    assert client.get("/ping").status_code == 200  # the worker survived


# Item 9: a client that sends the whole body before it reads -------------------------------------------------
def test_urllib_sending_7_mb_reads_the_413(dir_server):
    body = b"1,2,3,4,5\n" * (7 * 1024 * 1024 // 10)
    assert len(body) > PAYLOAD_LIMIT_BYTES
    request = urllib.request.Request(f"{dir_server.url}/invocations", data=body, headers={"Content-Type": "text/csv"})
    with pytest.raises(urllib.error.HTTPError) as caught:  # not URLError(ConnectionResetError / BrokenPipeError)
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 413
    assert "6 MB" in caught.value.read().decode()


def test_a_chunked_body_over_the_limit_is_413_and_the_client_reads_it(client):
    def chunks():
        line = b"1,2,3,4,5\n" * 10_000
        for _ in range(PAYLOAD_LIMIT_BYTES // len(line) + 20):
            yield line

    answer = client.post("/invocations", content=chunks(), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 413 and "6 MB" in answer.text


# Item 10: numbers are what they look like ---------------------------------------------------------------
@pytest.mark.parametrize(
    "field",
    ["1_000", "\uff11\uff12", "\u0661", "1\u00a0", "\u20071", "١٢"],
    ids=["underscore", "full-width", "arabic", "nbsp", "figure-space", "arabic2"],
)
def test_csv_refuses_numbers_python_reads_but_that_are_not_plain(field):
    with pytest.raises(BadRequest, match=r"row 1, field 2 \(avg_amount_loans_previous\).*not a plain number"):
        decode(f"1,{field},3,4,5\n".encode(), CSV, F)


def test_csv_refuses_underscores_on_any_row_not_only_the_first():
    with pytest.raises(BadRequest, match=r"row 3, field 5 \(flag_own_car\)"):
        decode(b"1,2,3,4,5\n1,2,3,4,5\n1,2,3,4,1_0\n", CSV, F)


def test_plain_numbers_are_still_read():
    # Literal float32 values: 2500.5 and 1e3 are exact, 0.1 rounds to 0.100000001490116...
    rows = decode(b"1,2500.5,-3,1e3,0.1\n +2 ,,.5,4.,1E-1\n", CSV, F)
    assert rows[0] == [1.0, 2500.5, -3.0, 1000.0, 0.10000000149011612]
    assert rows[1][0] == 2.0 and rows[1][1] != rows[1][1] and rows[1][2:] == [0.5, 4.0, 0.10000000149011612]


def test_full_width_digits_over_http_are_400(client):
    answer = client.post(
        "/invocations", content="1,\uff12\uff15,3,4,5\n".encode(), headers={"Content-Type": "text/csv"}
    )
    assert answer.status_code == 400 and "not a plain number" in answer.text
    answer = client.post("/invocations", content=b"1,1_000,3,4,5\n", headers={"Content-Type": "text/csv"})
    assert answer.status_code == 400 and "not a plain number" in answer.text


def test_json_numbers_stay_json_numbers():
    with pytest.raises(BadRequest, match="not a number"):
        decode(json.dumps([[1, "1_000", 3, 4, 5]]).encode(), JSON, F)
