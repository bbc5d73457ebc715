"""serving.fast_http: the plain small prediction answered outside ASGI, byte for byte as the ASGI route answers it.

Against a started server (model A, version "7"): every request is sent twice on raw sockets,
once as itself and once with a query string (`/invocations?via=asgi`), which the protocol
never takes, so uvicorn's ASGI path and the route of serving/app.py answer it (test_http.py
checks that route against XGBoost). The two answers must be the same bytes but for the date.
In process, with a transport that records writes: which requests skip the ASGI task at all.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time

import numpy as np
import pytest

from configuration.settings import load_settings
from tests.serving.conftest import protocol_in_process, synthetic_features

ENDPOINT = load_settings().serving.endpoint_name  # what the started server (tracked settings) answers to


def _csv(rows: int, seed: int = 3) -> bytes:
    matrix = synthetic_features(rows, seed=seed)
    return "".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n" for row in matrix).encode()


def _request(target: str, body: bytes, headers: dict[str, str] | None = None, version: str = "1.1") -> bytes:
    lines = [f"POST {target} HTTP/{version}", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _exchange(port: int, *chunks: bytes, pause: float = 0.0, answers: int = 1) -> tuple[bytes, bool]:
    """Send the chunks (with a pause between them), read `answers` responses; whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for index, chunk in enumerate(chunks):
            if index and pause:
                time.sleep(pause)
            sock.sendall(chunk)
        received = b""
        while received.count(b"HTTP/1.1 ") < answers or not _complete(received, answers):
            data = sock.recv(65536)
            if not data:
                return received, True
            received += data
        sock.settimeout(0.3)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return received, closed


def _complete(received: bytes, answers: int) -> bool:
    """Whether `received` holds that many whole responses (each with a Content-Length)."""
    rest = received
    for _ in range(answers):
        head, found, rest = rest.partition(b"\r\n\r\n")
        if not found:
            return False
        length = re.search(rb"(?im)^content-length: (\d+)\r?$", head)
        if length is None or len(rest) < int(length.group(1)):
            return False
        rest = rest[int(length.group(1)) :]
    return True


def _undated(answer: bytes) -> bytes:
    answer = re.sub(rb"(?m)^date: [^\r]*\r$", b"date: -\r", answer)
    return re.sub(rb"x-amzn-requestid: [0-9a-f-]+", b"x-amzn-requestid: -", answer)


def _via_asgi(request: bytes) -> bytes:
    first, rest = request.split(b"\r\n", 1)
    method, target, version = first.split(b" ")
    return b" ".join([method, target + (b"&" if b"?" in target else b"?") + b"via=asgi", version]) + b"\r\n" + rest


CASES = {
    "one CSV row": _request("/invocations", _csv(1), {"Content-Type": "text/csv"}),
    "no Content-Type": _request("/invocations", _csv(1)),
    "CSV with charset": _request("/invocations", _csv(1), {"Content-Type": "text/csv; charset=utf-8"}),
    "JSON in, JSON out": _request(
        "/invocations",
        b'{"instances": [[1, 2, 3, 4, 1], [5, null, 7, 8, 0]]}',
        {"Content-Type": "application/json", "Accept": "application/json"},
    ),
    "32 rows (the fast path's limit)": _request("/invocations", _csv(32), {"Content-Type": "text/csv"}),
    "33 rows (XGBoost, off the loop)": _request("/invocations", _csv(33), {"Content-Type": "text/csv"}),
    "a missing value": _request("/invocations", b"1,,3,4,0\n", {"Content-Type": "text/csv"}),
    "the runtime route": _request(f"/endpoints/{ENDPOINT}/invocations", _csv(1), {"Content-Type": "text/csv"}),
    "another endpoint's name": _request("/endpoints/other/invocations", _csv(1), {"Content-Type": "text/csv"}),
    "a bad row": _request("/invocations", b"1,2,three,4,0\n", {"Content-Type": "text/csv"}),
    "a bad row on the runtime route": _request(f"/endpoints/{ENDPOINT}/invocations", b"1,2\n"),
    "an empty body": _request("/invocations", b"", {"Content-Type": "text/csv"}),
    "415": _request("/invocations", _csv(1), {"Content-Type": "text/plain"}),
    "406": _request("/invocations", _csv(1), {"Accept": "image/png"}),
    "a repeated Content-Type (the last wins)": _request(
        "/invocations", _csv(1), {"Content-Type": "text/plain", "content-type": "text/csv"}
    ),
    "explanations asked": _request(
        "/invocations", _csv(1), {"Content-Type": "text/csv", "X-Amzn-SageMaker-Enable-Explanations": "`true`"}
    ),
    "Connection: close": _request("/invocations", _csv(1), {"Connection": "close"}),
    "HTTP/1.0": _request("/invocations", _csv(1), version="1.0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_bytes_as_the_asgi_route(dir_server, case):
    request = CASES[case]
    fast, fast_closed = _exchange(dir_server.port, request)
    asgi, asgi_closed = _exchange(dir_server.port, _via_asgi(request))
    assert fast.startswith(b"HTTP/1.1 ")
    assert _undated(fast) == _undated(asgi)
    assert fast_closed == asgi_closed


def test_a_plain_answer_is_what_xgboost_says(dir_server, model_a):
    from tests.serving.conftest import reference_predict

    answer, closed = _exchange(dir_server.port, CASES["one CSV row"])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and not closed
    assert b"\r\nx-model-version: 7\r\n" in head
    expected = reference_predict(model_a, synthetic_features(1, seed=3))
    assert float(body) == float(expected[0])


def test_connection_close_and_http_1_0_close_the_connection(dir_server):
    for case in ("Connection: close", "HTTP/1.0"):
        answer, closed = _exchange(dir_server.port, CASES[case])
        assert answer.startswith(b"HTTP/1.1 200 OK") and closed, case


def test_pipelined_requests_are_answered_in_order(dir_server):
    order = ["one CSV row", "a bad row", "33 rows (XGBoost, off the loop)", "JSON in, JSON out", "415", "one CSV row"]
    together, _ = _exchange(dir_server.port, b"".join(CASES[name] for name in order), answers=len(order))
    one_by_one = b"".join(_exchange(dir_server.port, CASES[name])[0] for name in order)
    assert _undated(together) == _undated(one_by_one)
    statuses = re.findall(rb"HTTP/1.1 (\d+)", together)
    assert statuses == [b"200", b"400", b"200", b"200", b"415", b"200"]


def test_a_body_in_several_segments(dir_server):
    request = CASES["32 rows (the fast path's limit)"]
    head, _, body = request.partition(b"\r\n\r\n")
    split, _ = _exchange(dir_server.port, head + b"\r\n\r\n", body[:50], body[50:], pause=0.05)
    whole, _ = _exchange(dir_server.port, request)
    assert _undated(split) == _undated(whole)
    assert split.startswith(b"HTTP/1.1 200 OK")


# In process: which requests are answered without an ASGI task.


@pytest.fixture(scope="module")
def routes(model_a, tmp_path_factory):
    from configuration.settings import load_settings
    from serving.app import create_app

    state = tmp_path_factory.mktemp("fast-http")
    settings = load_settings(
        paths={"state_dir": str(state), "lake": str(state)},
        serving={"model_dir": str(model_a), "model_version": "7"},
    )
    app = create_app(settings)
    app.state.watcher.check()  # the model, as the lifespan loads it
    return app


@pytest.mark.parametrize(
    ("case", "taken"),
    [
        ("one CSV row", True),
        ("JSON in, JSON out", True),
        ("the runtime route", True),
        ("32 rows (the fast path's limit)", True),
        ("33 rows (XGBoost, off the loop)", False),
        ("a bad row", False),
        ("415", False),
        ("explanations asked", False),
        ("HTTP/1.0", False),
        ("another endpoint's name", False),
    ],
)
def test_which_requests_skip_the_asgi_cycle(routes, case, taken):
    async def run() -> tuple[bool, bytes]:
        protocol, transport, state = protocol_in_process(routes)
        protocol.data_received(CASES[case])
        started = bool(state.tasks)  # an ASGI task is made at once for a request uvicorn's path answers
        for _ in range(200):
            if transport.written:
                break
            await asyncio.sleep(0.01)
        protocol.connection_lost(None)
        return not started, b"".join(transport.written)

    skipped, written = asyncio.run(run())
    assert skipped is taken
    assert written.startswith(b"HTTP/1.1 ")


def test_a_concurrency_limit_or_a_query_keeps_uvicorn_s_path(routes):
    async def tasks_started(request: bytes, **options) -> int:
        protocol, _, state = protocol_in_process(routes, **options)
        protocol.data_received(request)
        count = len(state.tasks)
        await asyncio.sleep(0.05)
        protocol.connection_lost(None)
        return count

    assert asyncio.run(tasks_started(CASES["one CSV row"], limit_concurrency=100)) == 1
    assert asyncio.run(tasks_started(_via_asgi(CASES["one CSV row"]))) == 1
    assert asyncio.run(tasks_started(CASES["one CSV row"])) == 0


def test_shutdown_while_a_body_arrives_answers_then_closes(routes):
    async def run() -> tuple[bool, bytes, bool]:
        protocol, transport, _ = protocol_in_process(routes)
        request = CASES["one CSV row"]
        protocol.data_received(request[:-5])
        protocol.shutdown()
        closed_early = transport.closed
        protocol.data_received(request[-5:])
        return closed_early, b"".join(transport.written), transport.closed

    closed_early, answer, closed = asyncio.run(run())
    assert not closed_early
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"\r\nconnection: close\r\n" in answer
    assert closed
