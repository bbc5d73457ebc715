"""The Redis online store: one hash per customer, the snapshot switch a single SET.

Keys (prefix from settings.online_store.key_prefix):
    <prefix>:current                  the current namespace (`<run_id>@<random>`): the one-step switch
    <prefix>:snapshot:<namespace>     hash: run_id, as_of, state (writing|current|retired), rows, times
    <prefix>:snapshots                set of the namespaces the store records (to sweep leftovers)
    <prefix>:<namespace>:<id>         hash: id and each non-missing feature (a missing value has no field)

Writes go in pipelines without MULTI (`pipeline(transaction=False)`): a batch is one
round trip, not one per key, and atomicity is not needed because nothing reads a
namespace before the switch. A read is one Lua script that GETs the pointer and HMGETs
every id under it, so it runs as one atomic step on the server: all records of one call
come from one snapshot even while a switch happens, and one round trip answers a whole
batch. (The script builds key names from the pointer, which a Redis Cluster would refuse;
this store targets a single Redis server or a primary with replicas.)

Values are written as text (`str` of an int, `repr` of a float, both exact) and read back
as int when the text is an integer literal, float otherwise.

Two clients: redis-py (hiredis parsing) for everything synchronous, and for the async reads,
the API's per-request hop, the project's own small client (features/online/resp.py), which
costs about half the CPU per read of redis-py's asyncio one.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from features.online.resp import RespError, RespPool, RespReplyError
from features.online.base import (
    FeatureRecord,
    OnlineStore,
    Row,
    SnapshotInfo,
    StoreError,
    StoreUnavailable,
    new_namespace,
    require,
    utc_now,
)

_PIPELINE_COMMANDS = 1000  # commands per round trip when writing
_ASYNC_CONNECTIONS = 32  # the async reads' connections at most (the API's requests in flight beyond that wait)


@functools.lru_cache(maxsize=8)
def _sha1(script: str) -> str:
    """What Redis names a script by (SCRIPT LOAD, EVALSHA)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


KEY_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+$"  # nothing that could end a Lua string (read_script) or a key's part
_SAFE_NAME = re.compile(KEY_PREFIX_PATTERN)


def read_script(prefix: str, fields: Sequence[str]) -> str:
    """KEYS[1] = <prefix>:current; ARGV = the ids. The prefix and the fields are written into the script
    rather than sent with every call: a read then packs 5 arguments instead of 17 (redis-py packs each in Python)."""
    for name in (prefix, *fields):
        if not _SAFE_NAME.match(name):
            raise StoreError(
                f"{name!r} cannot be a key prefix or a field name of the Redis store: use A-Z a-z 0-9 _ . -"
            )
    quoted = ", ".join(f"'{name}'" for name in fields)
    return f"""
local namespace = redis.call('GET', KEYS[1])
if not namespace then return false end
local prefix = '{prefix}'
local meta = redis.call('HMGET', prefix .. ':snapshot:' .. namespace, 'run_id', 'as_of')
local fields = {{{quoted}}}
local out = {{namespace, meta[1], meta[2]}}
for i = 1, #ARGV do
  out[#out + 1] = redis.call('HMGET', prefix .. ':' .. namespace .. ':' .. ARGV[i], unpack(fields))
end
return out
"""


# The pointer and its snapshot's record in one atomic step.
_CURRENT_SCRIPT = """
local namespace = redis.call('GET', KEYS[1])
if not namespace then return false end
return {namespace, redis.call('HGETALL', ARGV[1] .. ':snapshot:' .. namespace)}
"""


class RedisStoreConfig(BaseModel):
    """How to reach the Redis server of the online store, and where in its key space to write."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["redis"] = "redis"
    url: str = Field(description="redis:// (or rediss://) URL with the database number, e.g. redis://127.0.0.1:6379/0.")
    key_prefix: str = Field(
        "sparkmaker", pattern=KEY_PREFIX_PATTERN, description="Prefix of every key the store writes."
    )
    timeout_seconds: float = Field(1.0, gt=0, description="Connect and read timeout of one call to the server.")
    stale_after_seconds: float = Field(
        3600.0,
        ge=0,
        description="A snapshot still being written after this long belongs to a dead materialization and is swept.",
    )


def _encode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    raise StoreError(f"feature value {value!r} is not a number: the latest-features table holds numbers only")


def _decode(text: str | None) -> int | float | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class RedisOnlineStore(OnlineStore):
    kind = "redis"

    def __init__(self, config: RedisStoreConfig) -> None:
        self.config = config
        self._redis = require("redis", "Redis", "redis")
        # Made on first use (the clients connect lazily); typed Any: redis' own types differ per version.
        self._client: Any = None
        self._async_client: RespPool | None = None  # the async reads' own lean client (features/online/resp.py)
        self._script: Any = None
        self._lock = threading.Lock()
        p = config.key_prefix
        self._current_key = f"{p}:current"
        self._set_key = f"{p}:snapshots"
        self._fields = ("id", *self.features)
        self._read_script = read_script(p, self._fields)

    def describe(self) -> str:
        return f"redis store {redact(self.config.url)} (prefix {self.config.key_prefix})"

    def _meta_key(self, namespace: str) -> str:
        return f"{self.config.key_prefix}:snapshot:{namespace}"

    def _row_key(self, namespace: str, ident: int) -> str:
        return f"{self.config.key_prefix}:{namespace}:{ident}"

    # Connections (lazy) -----------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.config.timeout_seconds,
            "socket_connect_timeout": self.config.timeout_seconds,
            "decode_responses": True,
        }

    def _sync(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        client = self._redis.Redis.from_url(self.config.url, **self._options())
                    except ValueError as exc:
                        raise StoreError(
                            f"online_store.redis_url is not a Redis URL ({exc}): write redis://HOST:PORT/DB"
                        ) from None
                    self._script = client.register_script(self._read_script)
                    self._current_script = client.register_script(_CURRENT_SCRIPT)
                    self._client = client
        return self._client

    def _async(self) -> RespPool:
        if self._async_client is None:
            try:
                self._async_client = RespPool.from_url(self.config.url, _ASYNC_CONNECTIONS, self.config.timeout_seconds)
            except ValueError as exc:
                raise StoreError(
                    f"online_store.redis_url cannot be read by the async reads' client: {exc} "
                    "(write redis://[USER:PASSWORD@]HOST:PORT/DB or rediss://...)"
                ) from None
        return self._async_client

    async def _eval_async(self, script: str, *args: Any) -> Any:
        """A script run by its sha1 (EVALSHA), loaded first if the server does not have it (a restart, a FLUSH)."""
        pool = self._async()
        sha = _sha1(script)
        try:
            try:
                return await pool.call("EVALSHA", sha, 1, self._current_key, *args)
            except RespReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                await pool.call("SCRIPT", "LOAD", script)
                return await pool.call("EVALSHA", sha, 1, self._current_key, *args)
        except RespError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"the Redis online store at {redact(self.config.url)} is not available: {exc}")

    def _call(self, fn, *args, **kwargs):
        self._sync()
        try:
            return fn(*args, **kwargs)
        except self._redis.exceptions.RedisError as exc:
            raise self._unavailable(exc) from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        self.close()
        client, self._async_client = self._async_client, None
        if client is not None:
            await client.aclose()

    # Writing ----------------------------------------------------------------------------
    def begin_snapshot(self, run_id: str, as_of: str) -> str:
        namespace = new_namespace(run_id)
        client = self._sync()
        cutoff = time.time() - self.config.stale_after_seconds

        def run() -> None:
            for old in client.smembers(self._set_key):
                meta = client.hgetall(self._meta_key(old))
                state = meta.get("state")
                stale = state == "writing" and float(meta.get("started_epoch", 0)) <= cutoff
                if state == "retired" or stale or not meta:
                    self._drop(old)
            pipe = client.pipeline(transaction=True)
            pipe.hset(
                self._meta_key(namespace),
                mapping={
                    "run_id": run_id,
                    "as_of": str(as_of),
                    "state": "writing",
                    "started_at": utc_now(),
                    "started_epoch": repr(time.time()),
                },
            )
            pipe.sadd(self._set_key, namespace)
            pipe.execute()

        self._call(run)
        return namespace

    def _require_writing(self, namespace: str) -> dict[str, str]:
        meta = self._call(self._sync().hgetall, self._meta_key(namespace))
        if meta.get("state") != "writing":
            raise StoreError(
                f"snapshot namespace {namespace} is not being written (it was published, discarded or swept): materialize again"
            )
        return meta

    def online_write_batch(self, namespace: str, rows: Sequence[Row]) -> None:
        self._require_writing(namespace)
        client = self._sync()
        names = self.features

        def run() -> None:
            pipe = client.pipeline(transaction=False)
            for index, row in enumerate(rows, start=1):
                mapping = {"id": _encode(row[0])}
                for name, value in zip(names, row[1:]):
                    encoded = _encode(value)
                    if encoded is not None:
                        mapping[name] = encoded
                pipe.hset(self._row_key(namespace, int(row[0])), mapping=mapping)
                if index % _PIPELINE_COMMANDS == 0:
                    pipe.execute()
            pipe.execute()

        self._call(run)

    def publish(self, namespace: str, rows: int) -> SnapshotInfo:
        client = self._sync()
        published_at = utc_now()
        result: dict[str, Any] = {}

        def switch(pipe) -> None:
            # WATCHed: a concurrent publish or discard makes this retry from the checks.
            meta = pipe.hgetall(self._meta_key(namespace))
            if meta.get("state") != "writing":
                raise StoreError(
                    f"snapshot namespace {namespace} is not being written (it was published, discarded or swept): materialize again"
                )
            previous = pipe.get(self._current_key)
            pipe.multi()
            pipe.set(self._current_key, namespace)
            pipe.hset(
                self._meta_key(namespace), mapping={"state": "current", "rows": rows, "published_at": published_at}
            )
            if previous and previous != namespace:
                pipe.hset(self._meta_key(previous), "state", "retired")
            result.update(meta=meta, previous=previous)

        self._call(client.transaction, switch, self._current_key, self._meta_key(namespace))
        previous = result["previous"]
        if previous and previous != namespace:
            # After the switch: a failure here leaves a retired namespace that no reader
            # uses and the next begin_snapshot removes.
            self._call(self._drop, previous)
        meta = result["meta"]
        return SnapshotInfo(
            run_id=meta["run_id"], as_of=meta["as_of"], rows=rows, namespace=namespace, published_at=published_at
        )

    def _drop(self, namespace: str) -> None:
        client = self._sync()
        pattern = f"{self.config.key_prefix}:{namespace}:*"  # namespaces hold no glob characters (checked run ids, hex)
        batch: list[str] = []
        for key in client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
        pipe = client.pipeline(transaction=True)
        pipe.delete(self._meta_key(namespace))
        pipe.srem(self._set_key, namespace)
        pipe.execute()

    def discard(self, namespace: str) -> None:
        if self._call(self._sync().get, self._current_key) == namespace:
            raise StoreError(f"snapshot namespace {namespace} is current: it cannot be discarded")
        self._call(self._drop, namespace)

    # Reading ----------------------------------------------------------------------------
    def _records(self, reply: Any, wanted: list[int]) -> list[FeatureRecord | None]:
        if not reply:
            return [None] * len(wanted)
        _, run_id, as_of = reply[0], reply[1], reply[2]
        names = self.features
        out: list[FeatureRecord | None] = []
        for values in reply[3:]:
            if values[0] is None:
                out.append(None)
            else:
                out.append(
                    FeatureRecord(
                        id=int(values[0]),
                        features={name: _decode(v) for name, v in zip(names, values[1:])},
                        run_id=run_id,
                        as_of=as_of,
                    )
                )
        return out

    def online_read(self, ids: Sequence[int]) -> list[FeatureRecord | None]:
        wanted = [int(i) for i in ids]
        if not wanted:
            return []
        self._sync()
        reply = self._call(self._script, keys=[self._current_key], args=wanted)
        return self._records(reply, wanted)

    async def online_read_async(self, ids: Sequence[int]) -> list[FeatureRecord | None]:
        wanted = [int(i) for i in ids]
        if not wanted:
            return []
        return self._records(await self._eval_async(self._read_script, *wanted), wanted)

    def _snapshot_from(self, reply: Any) -> SnapshotInfo | None:
        if not reply:
            return None
        namespace, flat = reply[0], reply[1]
        meta = dict(zip(flat[::2], flat[1::2]))
        if not meta:
            return None
        return SnapshotInfo(
            run_id=meta["run_id"],
            as_of=meta["as_of"],
            rows=int(meta.get("rows", 0)),
            namespace=namespace,
            published_at=meta.get("published_at", ""),
        )

    def current_snapshot(self) -> SnapshotInfo | None:
        self._sync()
        return self._snapshot_from(
            self._call(self._current_script, keys=[self._current_key], args=[self.config.key_prefix])
        )

    async def current_snapshot_async(self) -> SnapshotInfo | None:
        return self._snapshot_from(await self._eval_async(_CURRENT_SCRIPT, self.config.key_prefix))

    def ping(self) -> None:
        self._call(self._sync().ping)

    async def ping_async(self) -> None:
        try:
            await self._async().call("PING")
        except RespError as exc:
            raise self._unavailable(exc) from None

    def snapshot_states(self) -> dict[str, str]:
        client = self._sync()

        def run() -> dict[str, str]:
            return {ns: client.hget(self._meta_key(ns), "state") or "unknown" for ns in client.smembers(self._set_key)}

        return self._call(run)

    def row_count(self, namespace: str) -> int:
        client = self._sync()
        return self._call(
            lambda: sum(1 for _ in client.scan_iter(match=f"{self.config.key_prefix}:{namespace}:*", count=5000))
        )

    def teardown(self) -> None:
        client = self._sync()

        def run() -> None:
            batch: list[str] = []
            for key in client.scan_iter(match=f"{self.config.key_prefix}:*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)

        self._call(run)
        self.close()
