"""The Redis store's async client (features/online/resp.py) against the real Redis at 127.0.0.1:6379.

What the shared store suite (test_store.py) does not reach: a password (an ACL user made for
the test, dropped after), a script the server forgot (SCRIPT FLUSH), a connection the server
killed while idle, a server that never answers, a call cancelled mid-flight, and a second
event loop. Replies are compared with redis-py's, the client this one stands beside.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid

import pytest

from features.online.base import StoreUnavailable
from features.online.resp import Endpoint, RespPool, RespReplyError, RespUnavailable
from tests.online.conftest import feature_rows, store_config


@pytest.fixture
def redis_store(redis_url, tmp_path):
    from features.online import open_store

    store = open_store(config=store_config("redis", tmp_path, redis_url))
    store.write_snapshot("20210918T000000Z-resp01", "2021-09-18", [feature_rows(range(100, 140))])
    yield store
    store.teardown()


def test_replies_are_redis_pys(redis_url):
    import redis

    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"resp-test-{uuid.uuid4().hex[:8]}"
    sync.hset(key, mapping={"a": "1", "b": "é"})
    try:

        async def main():
            pool = RespPool.from_url(redis_url, size=2, timeout_seconds=2)
            try:
                return [
                    await pool.call("HMGET", key, "a", "b", "missing"),
                    await pool.call("HGETALL", key),
                    await pool.call("EXISTS", key),
                    await pool.call("GET", f"{key}-absent"),
                    await pool.call("EVAL", "return {1, 'two', false}", 0),
                ]
            finally:
                await pool.aclose()

        hmget, hgetall, exists, absent, table = asyncio.run(main())
        assert hmget == sync.hmget(key, "a", "b", "missing") == ["1", "é", None]
        assert dict(zip(hgetall[::2], hgetall[1::2])) == sync.hgetall(key)
        assert exists == sync.exists(key) == 1
        assert absent is None
        assert table == sync.eval("return {1, 'two', false}", 0) == [1, "two", None]
    finally:
        sync.delete(key)


def test_an_error_reply_is_raised_with_the_servers_message(redis_url):
    async def main():
        pool = RespPool.from_url(redis_url, size=1, timeout_seconds=2)
        try:
            with pytest.raises(RespReplyError, match="NOSCRIPT"):
                await pool.call("EVALSHA", "0" * 40, 0)
            return await pool.call("PING")  # the connection is still good after an error reply
        finally:
            await pool.aclose()

    assert asyncio.run(main()) == "PONG"


def test_a_forgotten_script_is_loaded_again(redis_store):
    async def main():
        first = await redis_store.online_read_async([100, 999])
        import redis

        redis.Redis.from_url(redis_store.config.url).script_flush()  # as a restart without persistence would
        second = await redis_store.online_read_async([100, 999])
        await redis_store.aclose()
        return first, second

    first, second = asyncio.run(main())
    assert first == second == redis_store.online_read([100, 999])
    assert first[0] is not None and first[1] is None


def test_a_password_is_sent_first_and_a_wrong_one_is_store_unavailable(redis_url, redis_store):
    import redis

    admin = redis.Redis.from_url(redis_url)
    user, password = f"smtest-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    prefix = redis_store.config.key_prefix
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{prefix}:*"],
        commands=["+evalsha", "+script", "+get", "+hmget", "+select"],
    )
    try:
        from features.online import open_store

        host_and_db = redis_url.split("://", 1)[1]

        def read(secret: str):
            config = redis_store.config.model_copy(update={"url": f"redis://{user}:{secret}@{host_and_db}"})
            store = open_store(config=config)

            async def main():
                try:
                    return await store.online_read_async([100])
                finally:
                    await store.aclose()

            return asyncio.run(main())

        assert read(password) == redis_store.online_read([100])
        with pytest.raises(StoreUnavailable, match="AUTH refused: WRONGPASS"):
            read("wrong")
    finally:
        admin.acl_deluser(user)


# 0: the next call finds the connection looking open (retried once on a new one after its write);
# 0.05 s: the loop has seen it close (skipped in the pool).
@pytest.mark.parametrize("pause", [0, 0.05])
def test_an_idle_connection_the_server_killed_is_replaced(redis_url, pause):
    import redis

    admin = redis.Redis.from_url(redis_url)

    async def main():
        pool = RespPool.from_url(redis_url, size=1, timeout_seconds=2)
        try:
            own_id = await pool.call("CLIENT", "ID")
            assert admin.client_kill_filter(_id=own_id) == 1
            await asyncio.sleep(pause)
            return own_id, await pool.call("CLIENT", "ID")
        finally:
            await pool.aclose()

    killed, replacement = asyncio.run(main())
    assert replacement != killed


@pytest.fixture
def silent_server():
    """A TCP server that accepts and reads but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    threading.Thread(target=serve, daemon=True).start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    listener.close()
    for connection in accepted:
        connection.close()


def test_no_reply_within_the_timeout_is_unavailable_and_the_connection_dropped(silent_server):
    async def main():
        pool = RespPool.from_url(silent_server, size=1, timeout_seconds=0.2)
        with pytest.raises(RespUnavailable, match=r"no reply within 0.2 s"):
            await pool.call("PING")
        idle_after_timeout = len(pool._idle)
        task = asyncio.create_task(pool.call("PING"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return idle_after_timeout, len(pool._idle)

    assert asyncio.run(main()) == (0, 0)  # a late reply must never be read as the next call's


def test_the_store_times_out_in_one_line(silent_server, tmp_path):
    from features.online import open_store

    store = open_store(config=store_config("redis", tmp_path, silent_server, timeout_seconds=0.2))

    async def main():
        try:
            await store.online_read_async([1])
        finally:
            await store.aclose()

    with pytest.raises(StoreUnavailable, match=r"is not available: no reply within 0.2 s"):
        asyncio.run(main())


def test_a_second_event_loop_gets_connections_of_its_own(redis_store):
    expected = redis_store.online_read([101, 102])
    for _ in range(2):  # asyncio.run twice on one store, as a CLI or a test would
        assert asyncio.run(redis_store.online_read_async([101, 102])) == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://127.0.0.1:6379/15", Endpoint("127.0.0.1", 6379, 15)),
        ("redis://:secret@cache.internal/2", Endpoint("cache.internal", 6379, 2, None, "secret")),
        ("redis://reader:secret@cache.internal:6380", Endpoint("cache.internal", 6380, 0, "reader", "secret")),
        ("rediss://cache.internal:6380/0", Endpoint("cache.internal", 6380, 0, tls=True)),
    ],
)
def test_urls_are_read_as_redis_py_reads_them(url, expected):
    assert Endpoint.from_url(url) == expected


def test_a_url_option_the_client_would_not_honour_is_refused_not_dropped():
    with pytest.raises(ValueError, match="option ssl_cert_reqs is not read by the async client"):
        Endpoint.from_url("rediss://cache.internal:6380/0?ssl_cert_reqs=none")


def test_a_unix_socket_url_is_refused_in_one_line(tmp_path):
    from features.online import open_store
    from features.online.base import StoreError

    store = open_store(config=store_config("redis", tmp_path, "unix:///tmp/redis.sock"))
    with pytest.raises(StoreError, match="cannot be read by the async reads' client: only redis:// and rediss://"):
        asyncio.run(store.online_read_async([1]))


def test_many_concurrent_reads_each_get_their_own_answer(redis_store):
    """More reads in flight than connections: every answer is its own id's (no reply read as another call's)."""
    import random

    rng = random.Random(7)
    ids = [rng.randrange(95, 145) for _ in range(400)]  # 100-139 exist, the rest do not
    expected = {i: redis_store.online_read([i])[0] for i in set(ids)}

    async def main():
        try:
            return await asyncio.gather(*(redis_store.online_read_async([i]) for i in ids))
        finally:
            await redis_store.aclose()

    answers = asyncio.run(main())
    assert [a[0] for a in answers] == [expected[i] for i in ids]
    assert sum(a[0] is None for a in answers) > 0 and sum(a[0] is not None for a in answers) > 0
