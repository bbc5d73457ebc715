"""uvicorn's httptools protocol, answering the plain small POST /invocations without the ASGI cycle.

For every request uvicorn builds an ASGI cycle: a scope, a task, an event, a receive and two
sends, each send checking every header against two regular expressions. For a one-row
prediction that cycle costs more CPU than the prediction itself (benchmarks/README.md,
Serving). This protocol answers such a request from the parser's callbacks instead, with
the same functions the ASGI route calls (`PredictionRoutes.answer_plain`: the content types,
the decoder, the model, the encoder and the model's headers), and writes the same bytes the
ASGI route would.

Taken here, decided when the headers are complete: POST to exactly `/invocations` or
`/endpoints/{name}/invocations` (no query), HTTP/1.1, a Content-Length of at most
`FAST_BODY_BYTES` and no Transfer-Encoding, no Expect: 100-continue, no upgrade, no
explanation header, nothing in flight or queued on the connection, the transport writable,
no concurrency limit. Everything else, and any request whose answer is not a 200 (a bad
body, a 415 or 406, no model, a model that fails), is replayed into uvicorn's own ASGI path
with its body, so every error keeps the one implementation it has there.

It uses HttpToolsProtocol's own fields (url, headers, cycle, pipeline, flow, parser) as of the
uvicorn pinned in requirements.lock and serving/requirements.lock; tests/serving/test_fast_http.py
compares its answers with uvicorn's byte for byte, so an upgrade that changes them fails there.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol

from serving.app import PredictionRoutes

FAST_BODY_BYTES = 16 * 1024  # a few dozen rows; larger bodies go through ASGI (and the thread pool)
_RUNTIME_PREFIX = b"/endpoints/"
_SUFFIX = b"/invocations"
_CLOSE = b"connection: close\r\n"


def _endpoint_of(url: bytes) -> str | None:
    """'' for /invocations, the name for /endpoints/{name}/invocations, None for anything else."""
    if url == _SUFFIX:
        return ""
    if url.startswith(_RUNTIME_PREFIX) and url.endswith(_SUFFIX):
        name = url[len(_RUNTIME_PREFIX) : -len(_SUFFIX)]
        if name and b"/" not in name and b"?" not in name and b"%" not in name and name.isascii():
            return name.decode("ascii")
    return None


def header_block(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """Header lines as uvicorn writes them, or None when uvicorn would refuse one (then ASGI answers)."""
    lines = []
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):  # uvicorn's own checks
            return None
        lines.append(b"%s: %s\r\n" % (name.lower(), value))
    return b"".join(lines)


# The header lines of each list of headers answered with (per model and media type: a handful),
# checked once; keyed by the list's identity, which the entry keeps alive.
_blocks: dict[int, tuple[list[tuple[bytes, bytes]], bytes | None]] = {}


def _cached_block(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    entry = _blocks.get(id(headers))
    if entry is None or entry[0] is not headers:
        if len(_blocks) >= 64:  # models swapped many times: start again rather than grow
            _blocks.clear()
        entry = _blocks[id(headers)] = (headers, header_block(headers))
    return entry[1]


_defaults: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")


def _status_and_defaults(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The status line and uvicorn's default headers (the date): uvicorn makes a new list each second."""
    global _defaults
    cached, lines = _defaults
    if cached is not default_headers:
        lines = STATUS_LINE[200] + b"".join(b"%s: %s\r\n" % header for header in default_headers)
        _defaults = (default_headers, lines)
    return lines


class InvocationsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the plain small prediction answered in `on_message_complete` (module doc)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        app = self.app
        self.routes: PredictionRoutes | None = app if isinstance(app, PredictionRoutes) else None
        self.fast_endpoint: str | None = None  # set while a request taken here is being received
        self.fast_body = b""
        self.fast_types: tuple[bytes | None, bytes | None] = (None, None)  # its Content-Type and Accept
        self.close_after = False

    def on_message_begin(self) -> None:
        # uvicorn's, without the ASGI scope: built by _begin_asgi only for a request uvicorn's path answers.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]

    def _begin_asgi(self) -> None:
        """uvicorn's on_message_begin, after the fact: its scope around the URL and headers already read."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        if not self._take():
            self._begin_asgi()
            super().on_headers_complete()

    def _take(self) -> bool:
        """Whether this request is answered here (module doc); notes its endpoint and media types if so."""
        if (
            self.routes is None
            or self.limit_concurrency is not None
            or self.expect_100_continue
            or self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.flow.write_paused
            or self.parser.get_method() != b"POST"
            or self.parser.get_http_version() != "1.1"
            or self.parser.should_upgrade()
        ):
            return False
        endpoint = _endpoint_of(self.url)
        if endpoint is None:
            return False
        length = content_type = accept = None
        explain_header = self.routes.explain_header
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return False
                length = int(value)
            elif name == b"content-type":
                content_type = value  # the last one, as the ASGI route's dict() of the headers has it
            elif name == b"accept":
                accept = value
            elif name == b"transfer-encoding" or name == explain_header:
                return False
        if length is None or length > FAST_BODY_BYTES:
            return False
        self.fast_endpoint = endpoint
        self.fast_body = b""
        self.fast_types = (content_type, accept)
        return True

    def on_body(self, body: bytes) -> None:
        if self.fast_endpoint is None:
            return super().on_body(body)
        self.fast_body += body

    def on_message_complete(self) -> None:
        endpoint = self.fast_endpoint
        if endpoint is None:
            return super().on_message_complete()
        self.fast_endpoint = None
        body, self.fast_body = self.fast_body, b""
        assert self.routes is not None
        answer = self.routes.answer_plain(*self.fast_types, body, endpoint or None)
        if answer is None:
            return self._replay(body)
        content, type_headers, extra = answer
        head, tail = _cached_block(type_headers), _cached_block(extra)
        if head is None or tail is None:
            return self._replay(body)
        keep_alive = self.parser.should_keep_alive() and not self.close_after
        self.transport.write(
            b"%s%scontent-length: %d\r\n%s%s\r\n%s"
            % (
                _status_and_defaults(self.server_state.default_headers),
                head,
                len(content),
                tail,
                b"" if keep_alive else _CLOSE,
                content,
            )
        )
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _replay(self, body: bytes) -> None:
        """Not a plain 200: uvicorn's own path answers, exactly as if it had taken the request."""
        self._begin_asgi()
        super().on_headers_complete()
        if body:
            super().on_body(body)
        super().on_message_complete()

    def shutdown(self) -> None:
        if self.fast_endpoint is None:
            return super().shutdown()
        self.close_after = True  # the request being received is answered, then the connection closed
