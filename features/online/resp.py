"""A small pooled async Redis client: the Redis online store's read path (the API's per-request hop).

    pool = RespPool.from_url("redis://127.0.0.1:6379/0", size=8, timeout_seconds=1.0)
    reply = await pool.call("EVALSHA", sha, 1, key, 5008804)

Why not redis-py's asyncio client there: each of its calls goes through a lock, an event
dispatcher, observability recorders, a retry wrapper and an `asyncio.wait_for` task around
the socket write; that costs ~100 µs of CPU per one-id read, ten times the SQLite store's
whole read (benchmarks/README.md, Prediction API). This client does what a read needs and
no more:

- the URL is read by redis-py's own `parse_url` (host, port, db, username, password; rediss://
  for TLS), so both clients of the store reach the same server the same way; the connection
  sends AUTH and SELECT first when the URL asks for them;
- commands packed by hiredis (C), replies parsed by hiredis' Reader as they arrive, RESP2,
  strings decoded as UTF-8 (as redis-py's decode_responses);
- at most `size` connections, idle ones reused last-in first-out; one command at a time per
  connection; a reused connection that the server closed before a byte of the reply came
  back is retried once on a new one (the store's calls are reads);
- one deadline, `timeout_seconds`, over waiting for a connection, connecting and the whole
  exchange; a call cancelled or timed out mid-flight closes its connection, because a reply
  arriving later must not be read as the next call's.

Failures: `RespUnavailable` (cannot connect, closed, timed out, protocol error) and
`RespReplyError` (the server answered an error, e.g. NOSCRIPT), with the server's message.
Not done: RESP3, pub/sub, pipelines, unix sockets, Sentinel and Cluster (the store's sync
client, redis-py, is what writes and does everything else).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from dataclasses import dataclass
from typing import Any

import hiredis


class RespError(Exception):
    pass


class RespUnavailable(RespError):
    pass


class RespReplyError(RespError):
    """An error reply ("NOSCRIPT No matching script...", "WRONGPASS ..."): its text is the message."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> "Endpoint":
        """redis-py's reading of the URL; ValueError when it is not a redis:// or rediss:// URL with a host."""
        from redis.connection import SSLConnection, parse_url

        if not url.startswith(("redis://", "rediss://")):
            raise ValueError("only redis:// and rediss:// URLs are read by the async client")
        options = parse_url(url)
        # A query option (ssl_cert_reqs=none, socket_timeout=...) that this client would not honour
        # must not be dropped silently: the sync client would, and the two would disagree.
        ignored = sorted(set(options) - {"host", "port", "db", "username", "password", "connection_class"})
        if ignored:
            raise ValueError(f"the URL's option {ignored[0]} is not read by the async client: remove it")
        return cls(
            host=options.get("host") or "localhost",
            port=int(options.get("port") or 6379),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
            tls=options.get("connection_class") is SSLConnection,
        )

    def handshake(self) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


class _Connection(asyncio.Protocol):
    """One connection: one command at a time, its reply parsed as the bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = hiredis.Reader(encoding="utf-8", protocolError=RespUnavailable, replyError=RespReplyError)
        self._waiter: asyncio.Future | None = None
        self._received = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted with the next call
            return
        self._received = True
        self._reader.feed(data)
        try:
            reply = self._reader.gets()
        except RespUnavailable as exc:
            self._fail(RespUnavailable(f"not a Redis reply: {exc}"))
            return
        if reply is not False:  # False: the reply is not complete yet
            self._waiter = None
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        why = f": {exc}" if exc else ""
        self._fail(RespUnavailable(f"the server closed the connection{why}"))

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def exchange(self, packed: bytes) -> Any:
        """The reply to one packed command (an error reply is returned as a RespReplyError, not raised)."""
        self._received = False
        if self.closed or self.transport is None or self.transport.is_closing():
            raise RespUnavailable("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(packed)
        return await self._waiter

    @property
    def answered_nothing(self) -> bool:
        return not self._received

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class RespPool:
    def __init__(self, endpoint: Endpoint, size: int, timeout_seconds: float) -> None:
        self.endpoint = endpoint
        self.timeout_seconds = timeout_seconds
        self._slots: asyncio.Semaphore | None = None  # made with the event loop of the first call
        self._idle: list[_Connection] = []
        self._ssl = ssl_module.create_default_context() if endpoint.tls else None
        self._closed = False
        self._size = size
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(cls, url: str, size: int, timeout_seconds: float) -> "RespPool":
        return cls(Endpoint.from_url(url), size, timeout_seconds)

    async def call(self, *args: Any) -> Any:
        """One command's reply; RespReplyError for an error reply, RespUnavailable for anything else that failed."""
        packed = hiredis.pack_command(args)
        loop = asyncio.get_running_loop()
        slots = self._slots
        if slots is None or loop is not self._loop:  # a new event loop: the old one's connections are unusable
            self._loop, self._idle, self._slots = loop, [], (slots := asyncio.Semaphore(self._size))
        try:
            async with asyncio.timeout(self.timeout_seconds):  # waiting for a connection counts too
                async with slots:
                    reply = await self._exchange(packed)
        except TimeoutError:
            raise RespUnavailable(f"no reply within {self.timeout_seconds:g} s") from None
        if isinstance(reply, RespReplyError):
            raise reply
        return reply

    async def _exchange(self, packed: bytes) -> Any:
        for attempt in (1, 2):
            while self._idle and self._idle[-1].closed:  # closed by the server while idle, and seen to be
                self._idle.pop()
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._connect()
            try:
                reply = await connection.exchange(packed)
            except RespUnavailable:
                connection.close()
                if attempt == 1 and reused and connection.answered_nothing:
                    continue  # the server closed it while idle: once more, on a new connection
                raise
            except BaseException:  # cancelled (the deadline): a late reply must not reach the next call
                connection.close()
                raise
            if self._closed or connection.closed:
                connection.close()
            else:
                self._idle.append(connection)
            return reply
        raise AssertionError("unreachable")

    async def _connect(self) -> _Connection:
        if self._closed:
            raise RespUnavailable("the client is closed")
        endpoint = self.endpoint
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, endpoint.host, endpoint.port, ssl=self._ssl)
        except OSError as exc:
            raise RespUnavailable(f"cannot connect to {endpoint.host}:{endpoint.port}: {exc}") from None
        try:
            for command in endpoint.handshake():
                reply = await connection.exchange(hiredis.pack_command(command))
                if isinstance(reply, RespReplyError):
                    raise RespUnavailable(f"{command[0]} refused: {reply}")
        except BaseException:
            connection.close()
            raise
        return connection

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
