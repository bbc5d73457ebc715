"""The SQLite online store: one file, the embedded default (under the lake: <lake>/online/features.sqlite).

Tables:
    features(namespace, id, <features...>)   rows of every namespace, primary key (namespace, id)
    snapshots(namespace, run_id, as_of, state, rows, ...)   writing | current | retired
    current(one = 1, namespace, run_id, as_of, rows, published_at)   the one-row pointer

A read is one SELECT joining `current` to `features`, so it sees one pointer and that
pointer's rows (SQLite runs a statement in one read transaction); the switch is one
transaction that rewrites the pointer row. WAL journaling lets readers go on while a
materialization writes, and lets it write in batches of their own transactions, so a
writer dying part-way leaves only rows that no pointer names.

Feature columns carry no declared type, so SQLite stores each value with the type it was
given (an int stays an int, a float a float), as the shared suite checks.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from configuration.sqlite import ThreadConnections
from features.online.base import (
    FeatureRecord,
    OnlineStore,
    Row,
    SnapshotInfo,
    StoreError,
    StoreUnavailable,
    new_namespace,
    utc_now,
)

_INT64 = (-(2**63), 2**63 - 1)
_CHUNK = 900  # ids per statement: far below SQLite's variable limit


class SqliteStoreConfig(BaseModel):
    """Where and how the SQLite online store keeps its file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sqlite"] = "sqlite"
    path: Path = Field(description="The database file; its folder is created when missing.")
    timeout_seconds: float = Field(
        1.0,
        gt=0,
        description="How long a call waits for a lock held by a writer before the store counts as unavailable.",
    )
    stale_after_seconds: float = Field(
        3600.0,
        ge=0,
        description="A snapshot still being written after this long belongs to a dead materialization and is swept.",
    )


class SqliteOnlineStore(OnlineStore):
    kind = "sqlite"

    def __init__(self, config: SqliteStoreConfig) -> None:
        self.config = config
        self._connections = ThreadConnections(
            config.path, config.timeout_seconds
        )  # one per thread (configuration.sqlite)
        self._schema_ready = False
        columns = ", ".join(f"f.{name}" for name in self.features)
        self._select = f"SELECT c.run_id, c.as_of, f.id, {columns} FROM current c JOIN features f ON f.namespace = c.namespace WHERE c.one = 1 AND f.id "
        self._read_sql: dict[int, str] = {}
        placeholders = ", ".join("?" for _ in range(1 + len(self.features)))
        self._insert = (
            f"INSERT OR REPLACE INTO features (namespace, id, {', '.join(self.features)}) VALUES (?, {placeholders})"
        )

    def describe(self) -> str:
        return f"sqlite store {self.config.path}"

    # Connections ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn, _ = self._connections.get()
            if not self._schema_ready:
                try:
                    self._create_schema(conn)
                except BaseException:
                    self._connections.forget_this_thread()  # not left inside a failed transaction
                    raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(
                f"cannot open the online store {self.config.path}: {exc}: check the path and its permissions"
            ) from None
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        columns = ", ".join(self.features)
        # Several workers may create it at once: take the write lock first (with the busy wait).
        conn.executescript(
            f"""
            BEGIN IMMEDIATE;
            CREATE TABLE IF NOT EXISTS features (
                namespace TEXT NOT NULL, id INTEGER NOT NULL, {columns},
                PRIMARY KEY (namespace, id)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS snapshots (
                namespace TEXT PRIMARY KEY, run_id TEXT NOT NULL, as_of TEXT NOT NULL, state TEXT NOT NULL,
                rows INTEGER, started_at TEXT NOT NULL, started_epoch REAL NOT NULL, published_at TEXT
            );
            CREATE TABLE IF NOT EXISTS current (
                one INTEGER PRIMARY KEY CHECK (one = 1), namespace TEXT NOT NULL, run_id TEXT NOT NULL,
                as_of TEXT NOT NULL, rows INTEGER NOT NULL, published_at TEXT NOT NULL
            );
            COMMIT;
            """
        )
        found = [row[1] for row in conn.execute("PRAGMA table_info(features)")][2:]
        if found != list(self.features):
            raise StoreError(
                f"the online store {self.config.path} holds features {found}, this code reads {list(self.features)}: "
                "delete the file (or run teardown) and materialize again"
            )
        self._schema_ready = True

    @contextmanager
    def _transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the online store {self.config.path} is not available: {exc}") from None

    def close(self) -> None:
        self._connections.close_all()

    # Writing ----------------------------------------------------------------------------
    def begin_snapshot(self, run_id: str, as_of: str) -> str:
        namespace = new_namespace(run_id)
        cutoff = time.time() - self.config.stale_after_seconds
        with self._transaction() as conn:
            leftovers = [
                row[0]
                for row in conn.execute(
                    "SELECT namespace FROM snapshots WHERE state = 'retired' OR (state = 'writing' AND started_epoch <= ?)",
                    (cutoff,),
                )
            ]
            for old in leftovers:
                conn.execute("DELETE FROM features WHERE namespace = ?", (old,))
                conn.execute("DELETE FROM snapshots WHERE namespace = ?", (old,))
            conn.execute(
                "INSERT INTO snapshots (namespace, run_id, as_of, state, started_at, started_epoch) VALUES (?, ?, ?, 'writing', ?, ?)",
                (namespace, run_id, str(as_of), utc_now(), time.time()),
            )
        return namespace

    def _require_writing(self, conn: sqlite3.Connection, namespace: str) -> tuple[str, str]:
        row = conn.execute("SELECT state, run_id, as_of FROM snapshots WHERE namespace = ?", (namespace,)).fetchone()
        if row is None or row[0] != "writing":
            raise StoreError(
                f"snapshot namespace {namespace} is not being written (it was published, discarded or swept): materialize again"
            )
        return row[1], row[2]

    def online_write_batch(self, namespace: str, rows: Sequence[Row]) -> None:
        with self._transaction() as conn:
            self._require_writing(conn, namespace)
            conn.executemany(self._insert, ((namespace, *row) for row in rows))

    def publish(self, namespace: str, rows: int) -> SnapshotInfo:
        published_at = utc_now()
        with self._transaction() as conn:
            run_id, as_of = self._require_writing(conn, namespace)
            previous = conn.execute("SELECT namespace FROM current WHERE one = 1").fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO current (one, namespace, run_id, as_of, rows, published_at) VALUES (1, ?, ?, ?, ?, ?)",
                (namespace, run_id, as_of, rows, published_at),
            )
            conn.execute(
                "UPDATE snapshots SET state = 'current', rows = ?, published_at = ? WHERE namespace = ?",
                (rows, published_at, namespace),
            )
            if previous:
                conn.execute("UPDATE snapshots SET state = 'retired' WHERE namespace = ?", (previous[0],))
        if previous:
            # After the switch, in a transaction of its own: a failure here leaves a retired
            # namespace that no reader uses and the next begin_snapshot removes.
            self._drop(previous[0])
        return SnapshotInfo(run_id=run_id, as_of=as_of, rows=rows, namespace=namespace, published_at=published_at)

    def _drop(self, namespace: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM features WHERE namespace = ?", (namespace,))
            conn.execute("DELETE FROM snapshots WHERE namespace = ? AND state != 'current'", (namespace,))

    def discard(self, namespace: str) -> None:
        with self._transaction() as conn:
            state = conn.execute("SELECT state FROM snapshots WHERE namespace = ?", (namespace,)).fetchone()
            if state and state[0] == "current":
                raise StoreError(f"snapshot namespace {namespace} is current: it cannot be discarded")
            conn.execute("DELETE FROM features WHERE namespace = ?", (namespace,))
            conn.execute("DELETE FROM snapshots WHERE namespace = ?", (namespace,))

    # Reading ----------------------------------------------------------------------------
    def _sql_for(self, count: int) -> str:
        sql = self._read_sql.get(count)
        if sql is None:
            sql = self._select + ("= ?" if count == 1 else f"IN ({', '.join('?' for _ in range(count))})")
            self._read_sql[count] = sql
        return sql

    def online_read(self, ids: Sequence[int]) -> list[FeatureRecord | None]:
        wanted = [int(i) for i in ids]
        keys = list(dict.fromkeys(i for i in wanted if _INT64[0] <= i <= _INT64[1]))
        found: dict[int, FeatureRecord] = {}
        names = self.features
        try:
            conn = self._connect()
            chunks = [keys[i : i + _CHUNK] for i in range(0, len(keys), _CHUNK)]
            if len(chunks) > 1:
                conn.execute("BEGIN")  # several statements: one read transaction keeps them on one snapshot
            try:
                for chunk in chunks:
                    for row in conn.execute(self._sql_for(len(chunk)), chunk):
                        found[row[2]] = FeatureRecord(
                            id=row[2], features=dict(zip(names, row[3:])), run_id=row[0], as_of=row[1]
                        )
            finally:
                if len(chunks) > 1:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read the online store {self.config.path}: {exc}") from None
        return [found.get(i) for i in wanted]

    async def online_read_async(self, ids: Sequence[int]) -> list[FeatureRecord | None]:
        # A read of a local file takes tens of microseconds: cheaper in the event loop than
        # the hop to a worker thread. WAL readers do not wait for writers.
        return self.online_read(ids)

    def current_snapshot(self) -> SnapshotInfo | None:
        try:
            row = (
                self._connect()
                .execute("SELECT run_id, as_of, rows, namespace, published_at FROM current WHERE one = 1")
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read the online store {self.config.path}: {exc}") from None
        return SnapshotInfo(*row) if row else None

    async def current_snapshot_async(self) -> SnapshotInfo | None:
        return self.current_snapshot()

    def ping(self) -> None:
        self.current_snapshot()

    async def ping_async(self) -> None:
        self.ping()

    def snapshot_states(self) -> dict[str, str]:
        try:
            return dict(self._connect().execute("SELECT namespace, state FROM snapshots").fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read the online store {self.config.path}: {exc}") from None

    def row_count(self, namespace: str) -> int:
        try:
            return (
                self._connect().execute("SELECT count(*) FROM features WHERE namespace = ?", (namespace,)).fetchone()[0]
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read the online store {self.config.path}: {exc}") from None

    def teardown(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.config.path}{suffix}").unlink(missing_ok=True)
        self._schema_ready = False
