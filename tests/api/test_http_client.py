"""api.http_client against real sockets: well-behaved and misbehaving HTTP servers written here byte by byte.

Each server is an asyncio server on a free port in the test's own loop; it reads one request
head (and its Content-Length body) at a time and answers what the test scripts, so the
client's parsing, reuse, limits and failures are checked against the bytes on the wire.
The real model server is exercised by the other API tests (every prediction goes through it).
"""

from __future__ import annotations

import asyncio

import pytest

from api.http_client import BadAnswer, ConnectFailed, Disconnected, HttpPool
from api.model_endpoint import HttpModelEndpoint, ModelFailed, ModelTimeout, ModelUnavailable
from configuration.network import free_port

REQUEST = b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\nContent-Length: 4\r\n\r\n1,2\n"


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Server:
    """Answers each request with `answer(n, head)` (bytes, or None to close without answering); counts connections."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests = 0
        self.open_now = 0
        self.most_open = 0
        self.bodies: list[bytes] = []  # every request's body, in the order they came
        self.port = free_port()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                self.requests += 1
                answer = self.answer(self.requests, head)
                if asyncio.iscoroutine(answer):
                    answer = await answer
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    return
        finally:
            self.open_now -= 1
            writer.close()


def run(coroutine):
    return asyncio.run(coroutine)


def test_keep_alive_connections_are_reused_and_content_length_bodies_read_whole():
    async def main():
        async with Server(lambda n, head: ok(b"0.%d\n" % n, b"X-Model-Version: 7\r\n")) as server:
            pool = HttpPool("127.0.0.1", server.port, size=4, connect_timeout=1.0)
            answers = [await pool.request(REQUEST) for _ in range(5)]
            await pool.aclose()
            return server, answers

    server, answers = run(main())
    assert [a.body for a in answers] == [b"0.1\n", b"0.2\n", b"0.3\n", b"0.4\n", b"0.5\n"]
    assert answers[0].status == 200 and answers[0].header("X-Model-Version") == "7"
    assert server.connections == 1  # one keep-alive connection served all five


def test_a_chunked_answer_is_assembled_and_the_connection_reused():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n0.\r\n3\r\n25\n\r\n0\r\n\r\n"

    async def main():
        async with Server(lambda n, head: chunked) as server:
            pool = HttpPool("127.0.0.1", server.port, size=2, connect_timeout=1.0)
            answers = [await pool.request(REQUEST) for _ in range(3)]
            await pool.aclose()
            return server, answers

    server, answers = run(main())
    assert [a.body for a in answers] == [b"0.25\n"] * 3
    assert server.connections == 1


def test_a_body_ended_by_closing_the_connection_is_read_and_the_connection_not_reused():
    async def main():
        async with Server(lambda n, head: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0.5\n") as server:
            pool = HttpPool("127.0.0.1", server.port, size=2, connect_timeout=1.0)
            answers = [await pool.request(REQUEST) for _ in range(2)]
            await pool.aclose()
            return server, answers

    server, answers = run(main())
    assert [a.body for a in answers] == [b"0.5\n", b"0.5\n"]
    assert server.connections == 2


def test_a_server_closing_before_answering_is_disconnected_and_the_endpoint_says_503():
    async def main():
        async with Server(lambda n, head: None) as server:
            pool = HttpPool("127.0.0.1", server.port, size=2, connect_timeout=1.0)
            with pytest.raises(Disconnected):
                await pool.request(REQUEST)  # a new connection is not retried: the server did close it
            endpoint = HttpModelEndpoint(f"http://127.0.0.1:{server.port}", 2.0, 2)
            with pytest.raises(ModelUnavailable):
                await endpoint.predict([[1, 2.0, 3, 4, 1]])
            await endpoint.aclose()
            assert pool.open_connections == 0
            await pool.aclose()

    run(main())


def test_a_connection_the_server_closed_while_idle_is_retried_once_on_a_new_one():
    async def main():
        # The server answers, then drops the connection after the first request of each connection
        # without saying Connection: close: the client finds out only when it reuses it.
        async def answer(n, head):
            return ok(b"0.5\n") if n % 2 == 1 else None

        async with Server(answer) as server:
            pool = HttpPool("127.0.0.1", server.port, size=1, connect_timeout=1.0)
            first = await pool.request(REQUEST)
            second = await pool.request(REQUEST)  # reused, closed with nothing sent back: retried on a new one
            await pool.aclose()
            return server, first, second

    server, first, second = run(main())
    assert first.body == second.body == b"0.5\n"
    assert server.connections == 2


def test_a_slow_answer_is_504_and_its_late_bytes_never_reach_the_next_call():
    async def main():
        async def answer(n, head):
            if n == 1:
                await asyncio.sleep(0.6)
                return ok(b"0.111\n")  # arrives after the caller gave up
            return ok(b"0.222\n")

        async with Server(answer) as server:
            endpoint = HttpModelEndpoint(f"http://127.0.0.1:{server.port}", 0.3, 1)
            with pytest.raises(ModelTimeout):
                await endpoint.predict([[1, 2.0, 3, 4, 1]])
            await asyncio.sleep(0.5)
            answer = await endpoint.predict([[1, 2.0, 3, 4, 1]])
            await endpoint.aclose()
            return server, answer

    server, answer = run(main())
    assert answer.probabilities == [0.222]
    assert server.connections == 2  # the timed-out connection was closed, not put back


@pytest.mark.parametrize(
    "status, expected", [(500, ModelFailed), (400, ModelFailed), (503, ModelUnavailable), (429, ModelUnavailable)]
)
def test_error_statuses_are_typed(status, expected):
    async def main():
        answer = b"HTTP/1.1 %d Oops\r\nContent-Length: 5\r\n\r\noops\n" % status
        async with Server(lambda n, head: answer) as server:
            endpoint = HttpModelEndpoint(f"http://127.0.0.1:{server.port}", 2.0, 1)
            with pytest.raises(expected):
                await endpoint.predict([[1, 2.0, 3, 4, 1]])
            answer_again = await endpoint._client().request(
                REQUEST
            )  # the connection stays usable after an error status
            await endpoint.aclose()
            return server, answer_again

    server, again = run(main())
    assert again.status == status and server.connections == 1


def test_an_answer_that_is_not_http_or_too_large_is_refused():
    async def main():
        async with Server(lambda n, head: b"SSH-2.0-OpenSSH_9.2\r\n\r\n") as server:
            pool = HttpPool("127.0.0.1", server.port, size=1, connect_timeout=1.0)
            with pytest.raises(BadAnswer):
                await pool.request(REQUEST)
            await pool.aclose()
        big = ok(b"0" * 5000)
        async with Server(lambda n, head: big) as server:
            pool = HttpPool("127.0.0.1", server.port, size=1, connect_timeout=1.0, max_answer_bytes=4096)
            with pytest.raises(BadAnswer, match="over 4096 bytes"):
                await pool.request(REQUEST)
            assert pool.open_connections == 0
            await pool.aclose()

    run(main())


def test_at_most_size_connections_are_open_and_callers_beyond_wait_their_turn():
    async def main():
        async def answer(n, head):
            await asyncio.sleep(0.05)
            return ok(b"0.5\n")

        async with Server(answer) as server:
            pool = HttpPool("127.0.0.1", server.port, size=2, connect_timeout=1.0)
            answers = await asyncio.gather(*(pool.request(REQUEST) for _ in range(7)))
            await pool.aclose()
            return server, answers

    server, answers = run(main())
    assert [a.body for a in answers] == [b"0.5\n"] * 7
    assert server.most_open == 2 and server.connections == 2


def test_a_caller_cancelled_while_waiting_for_a_connection_leaves_the_pool_whole():
    async def main():
        async def answer(n, head):
            await asyncio.sleep(0.2)
            return ok(b"0.5\n")

        async with Server(answer) as server:
            pool = HttpPool("127.0.0.1", server.port, size=1, connect_timeout=1.0)
            first = asyncio.create_task(pool.request(REQUEST))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await pool.request(REQUEST)  # waits for the one connection, gives up
            assert (await first).body == b"0.5\n"
            after = await pool.request(REQUEST)  # the connection came back to the pool
            await pool.aclose()
            return server, after

    server, after = run(main())
    assert after.body == b"0.5\n" and server.connections == 1


def test_nothing_listening_is_connect_failed_and_the_endpoint_says_503():
    async def main():
        port = free_port()
        pool = HttpPool("127.0.0.1", port, size=1, connect_timeout=1.0)
        with pytest.raises(ConnectFailed):
            await pool.request(REQUEST)
        assert pool.open_connections == 0
        endpoint = HttpModelEndpoint(f"http://127.0.0.1:{port}", 2.0, 1)
        with pytest.raises(ModelUnavailable, match="unreachable"):
            await endpoint.predict([[1, 2.0, 3, 4, 1]])
        with pytest.raises(ModelUnavailable):
            await endpoint.ping()

    run(main())


def test_the_endpoint_sends_the_contract_and_reads_version_and_threshold():
    heads: list[bytes] = []

    def answer(n, head):
        heads.append(head)
        return ok(b"0.25\n", b"X-Amzn-SageMaker-Custom-Attributes: model_version=9; threshold=0.3\r\n")

    async def main():
        async with Server(answer) as server:
            endpoint = HttpModelEndpoint(f"http://127.0.0.1:{server.port}/", 2.0, 1)
            result = await endpoint.predict([[1, None, 3, 4, 1]])
            await endpoint.aclose()
            return server, result

    server, result = run(main())
    assert result.probabilities == [0.25] and result.model_version == "9" and result.threshold == 0.3
    head = heads[0].decode()
    assert head.startswith("POST /invocations HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head
    assert "Content-Type: text/csv\r\n" in head and "Accept: text/csv\r\n" in head
    assert "Content-Length: 9\r\n" in head  # "1,,3,4,1\n": a missing value is an empty field
