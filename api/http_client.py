"""A small pooled HTTP/1.1 client on asyncio protocols: the API's hop to the model server.

    pool = HttpPool("127.0.0.1", 8080, size=8, connect_timeout=1.0)
    answer = await pool.request(b"POST /invocations HTTP/1.1\\r\\nHost: ...\\r\\n...\\r\\n\\r\\n" + body)
    answer.status, answer.header("x-model-version"), answer.body

Why not aiohttp: on the same two hops aiohttp's client cost ~100 µs of CPU per call more
than a bare keep-alive client, half of what the whole API may spend per request
(benchmarks/README.md, Prediction API). This client does what that one call needs and no more:

- keep-alive connections to one origin, at most `size` at once; a caller beyond that waits
  for one (as aiohttp's connector limit did); idle connections are reused last-in first-out
  and dropped after `idle_seconds` or as soon as the server closes them;
- answers parsed by httptools (llhttp, the parser uvicorn serves with): Content-Length,
  chunked, or a body that ends with the connection; `Connection: close` and HTTP/1.0 answers
  are not reused; an answer over `max_answer_bytes` is refused;
- a connect timeout of its own (`ConnectTimeout`); every other deadline is the caller's
  (`asyncio.timeout`): a call cancelled mid-flight closes its connection, because an answer
  arriving later must not be read as the next call's;
- a reused connection that the server closed before a byte of the answer came back (a
  restart racing the pool) is retried once on a new one: the caller's calls have no side effect.

Not done: redirects, cookies, proxies, compression, HTTP/2. `https` uses the default SSL context.
Failures are typed: `ConnectFailed` (refused, unreachable), `ConnectTimeout`, `Disconnected`
(closed before the whole answer), `BadAnswer` (not HTTP/1.1, or too large).
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
import time
from dataclasses import dataclass

import httptools

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one answer


class HttpClientError(Exception):
    pass


class ConnectFailed(HttpClientError):
    pass


class ConnectTimeout(ConnectFailed):
    pass


class Disconnected(HttpClientError):
    def __init__(self, message: str, answered_nothing: bool) -> None:
        super().__init__(message)
        self.answered_nothing = answered_nothing  # not a byte of the answer arrived


class BadAnswer(HttpClientError):
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's values joined with ", "
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time, the answer parsed as it arrives."""

    def __init__(self, max_answer_bytes: int) -> None:
        self.max_answer_bytes = max_answer_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._error: BadAnswer | None = None  # raised in a parser callback (httptools wraps it)
        self._reset()

    def _reset(self) -> None:
        self._received = 0
        self._head: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._headers_done = False
        self._to_eof = False  # a body delimited by the end of the connection

    # asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted with the next call
            return
        self._received += len(data)
        if not self._headers_done and self._received > MAX_HEAD_BYTES:
            return self._fail(BadAnswer(f"the answer's head is over {MAX_HEAD_BYTES} bytes"))
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadAnswer("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(self._error or BadAnswer(f"not an HTTP/1.1 answer: {exc}"))

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        names = {name.lower() for name, _ in self._head}
        status = self._parser.get_status_code()
        self._to_eof = (
            b"content-length" not in names
            and b"transfer-encoding" not in names
            and status >= 200
            and status not in (204, 304)
        )

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_answer_bytes:
            self._error = BadAnswer(f"the answer's body is over {self.max_answer_bytes} bytes")
            raise self._error
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the real answer follows
            self._reset()
            return
        self._finish(status, self._parser.should_keep_alive())

    # the exchange
    def _answer(self, status: int) -> Answer:
        headers: dict[str, str] = {}
        for name, value in self._head:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        return Answer(status, headers, body)

    def _finish(self, status: int, keep_alive: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        answer = self._answer(status)
        self._waiter = None
        self._reset()
        if not keep_alive:
            self.close()
        waiter.set_result(answer)

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _ended(self, exc: Exception | None) -> None:
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._to_eof:
            self._finish(self._parser.get_status_code(), keep_alive=False)
            return
        why = f": {exc}" if exc else ""
        self._fail(Disconnected(f"the server closed the connection before the whole answer{why}", self._received == 0))

    async def exchange(self, request: bytes) -> Answer:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise Disconnected("the connection is closed", answered_nothing=True)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # nothing of ours is worth flushing: an answer is complete or abandoned


class HttpPool:
    def __init__(
        self,
        host: str,
        port: int,
        size: int,
        connect_timeout: float,
        tls: bool = False,
        idle_seconds: float = 30.0,
        max_answer_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.host, self.port, self.size = host, port, size
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self.max_answer_bytes = max_answer_bytes
        self._ssl = ssl_module.create_default_context() if tls else None
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or being opened, idle ones included
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(self, request: bytes) -> Answer:
        """Send one whole request (head and body), return the whole answer."""
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            try:
                answer = await connection.exchange(request)
            except Disconnected as exc:
                self._discard(connection)
                if attempt == 1 and reused and exc.answered_nothing:
                    continue  # the server had closed it while idle: once more, on a new connection
                raise
            except BaseException:  # cancelled (the caller's deadline), or a bad answer: never reuse it
                self._discard(connection)
                raise
            if connection.closed:
                self._discard(connection)
            else:
                self._release(connection)
            return answer
        raise AssertionError("unreachable")

    async def _acquire(self) -> tuple[_Connection, bool]:
        while True:
            now = time.monotonic()
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed and now - connection.idle_since < self.idle_seconds:
                    return connection, True
                self._discard(connection)
            if self._closed:
                raise ConnectFailed("the pool is closed")
            if self._open < self.size:
                self._open += 1
                try:
                    return await self._connect(), False
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed a connection, then cancelled: pass it on
                    handed = waiter.result()
                    if handed is not None:
                        self._release(handed)
                    else:
                        self._wake()
                else:
                    self._waiters.remove(waiter)
                raise
            if handed is not None:
                return handed, True
            # None: a slot came free; loop and open a connection in it

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.max_answer_bytes), self.host, self.port, ssl=self._ssl
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        return connection

    def _release(self, connection: _Connection) -> None:
        if self._closed:
            return self._discard(connection)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        """A slot came free: let one waiter open a connection in it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self._discard(connection)
