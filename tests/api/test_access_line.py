"""The access line written straight to the JSON log's handler is the line `logging` would have written."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging

from api.observability import CURRENT, JsonLogHandler, Metrics, RequestContext, RequestMiddleware


@contextlib.contextmanager
def json_log():
    """The root logger as configure_logging leaves it (one JsonLogHandler), on a string stream; restored after.

    Entered in the test's body: pytest adds its capturing handlers to the root for each phase.
    """
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    handler = JsonLogHandler(stream)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield stream, handler
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_direct_line_is_the_logged_line():
    with json_log() as (stream, handler):
        _both_lines(handler)
    direct, logged = _lines(stream)
    assert direct.pop("ts")[:19] == logged.pop("ts")[:19]  # the same second; the milliseconds may differ
    assert list(direct.items()) == list(logged.items())  # the same keys in the same order
    assert direct["request_id"] == "req-1" and direct["message"] == "GET /predict/7 200"


def _both_lines(handler: JsonLogHandler) -> None:
    log = logging.getLogger("api.access")
    token = CURRENT.set(RequestContext("req-1", 0.0))
    try:
        assert handler.takes_directly(log)
        handler.access_line("api.access", "GET", "/predict/7", "/predict/{id}", 200, 1.234)
        log.info(
            "%s %s %d",
            "GET",
            "/predict/7",
            200,
            extra={"method": "GET", "path": "/predict/7", "route": "/predict/{id}", "status": 200, "ms": 1.234},
        )
    finally:
        CURRENT.reset(token)


def test_anything_that_could_change_the_line_sends_it_through_logging():
    with json_log() as (_, handler):
        _changes(handler)


def _changes(handler: JsonLogHandler) -> None:
    log = logging.getLogger("api.access")
    assert handler.takes_directly(log)
    log.setLevel(logging.WARNING)
    try:
        assert not handler.takes_directly(log)  # a level above INFO: no line at all, as logging decides
    finally:
        log.setLevel(logging.NOTSET)
    for change in ("filter", "handler", "propagate", "disabled"):
        target = logging.getLogger("api")
        extra = logging.NullHandler()
        if change == "filter":
            target.addFilter(lambda record: True)
        elif change == "handler":
            target.addHandler(extra)
        elif change == "propagate":
            target.propagate = False
        else:
            target.disabled = True
        try:
            assert not handler.takes_directly(log), change
        finally:
            target.filters.clear()
            target.removeHandler(extra)
            target.propagate = True
            target.disabled = False
    assert handler.takes_directly(log)


def test_the_middleware_writes_one_line_per_request_either_way():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):
        pass

    middleware = RequestMiddleware(app, Metrics())
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", b"abc")]}
    with json_log() as (stream, _):
        asyncio.run(middleware(scope, None, send))
        logging.getLogger("api").addFilter(lambda record: True)  # now through logging.info
        try:
            asyncio.run(middleware(scope, None, send))
        finally:
            logging.getLogger("api").filters.clear()
    direct, logged = _lines(stream)
    for line in (direct, logged):
        line.pop("ts")
        line.pop("ms")
    assert (
        direct
        == logged
        == {
            "level": "INFO",
            "logger": "api.access",
            "message": "GET /x 204",
            "request_id": "abc",
            "method": "GET",
            "path": "/x",
            "route": "unmatched",
            "status": 204,
        }
    )
