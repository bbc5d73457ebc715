"""The prediction log in a SQLite file (the default: <state_dir>/api/predictions.sqlite)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from api.prediction_log.base import COLUMNS, LogEntry, LogUnavailable, PredictionLog
from configuration.files import private_file
from configuration.sqlite import ThreadConnections


def _power_of_two_at_most(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


class SqlitePredictionLog(PredictionLog):
    kind = "sqlite"

    def __init__(self, path: Path, table: str = "predictions", timeout_seconds: float = 5.0) -> None:
        self.path = Path(path)
        self.table = table  # checked by the settings' pattern: safe to put in SQL
        self.timeout_seconds = timeout_seconds
        self._connections = ThreadConnections(self.path, timeout_seconds)
        self._inserts: dict[int, str] = {}  # rows per statement -> the INSERT of that many rows

    def describe(self) -> str:
        return f"sqlite prediction log {self.path} (table {self.table})"

    def _connect(self) -> sqlite3.Connection:
        try:
            if not self.path.exists():
                private_file(self.path)  # customer features: 0600 (SQLite gives -wal and -shm the same mode)
            conn, opened = self._connections.get()
            if opened:
                try:
                    # Several workers may create it at once: take the write lock first (with the busy wait).
                    conn.executescript(
                        f"""BEGIN IMMEDIATE;
                        CREATE TABLE IF NOT EXISTS {self.table} (
                            seq INTEGER PRIMARY KEY AUTOINCREMENT,
                            ts TEXT NOT NULL, request_id TEXT NOT NULL, customer_id INTEGER NOT NULL, features TEXT NOT NULL,
                            probability REAL NOT NULL, label INTEGER NOT NULL, threshold REAL NOT NULL, model_version TEXT NOT NULL,
                            snapshot_run_id TEXT NOT NULL, snapshot_as_of TEXT NOT NULL, latency_ms REAL NOT NULL,
                            reasons TEXT
                        );
                        CREATE INDEX IF NOT EXISTS {self.table}_ts ON {self.table} (ts);
                        COMMIT;"""
                    )
                    self._add_reasons_column(conn)
                except BaseException:
                    self._connections.forget_this_thread()  # the next call tries again
                    raise
        except (OSError, sqlite3.Error) as exc:
            raise LogUnavailable(f"cannot open the prediction log {self.path}: {exc}") from None
        return conn

    def _add_reasons_column(self, conn: sqlite3.Connection) -> None:
        # A log written before explanations existed has no reasons column: add it (NULL for the old rows).
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({self.table})")}
        if "reasons" not in columns:
            conn.execute("BEGIN IMMEDIATE")
            try:
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({self.table})")}
                if "reasons" not in columns:
                    conn.execute(f"ALTER TABLE {self.table} ADD COLUMN reasons TEXT")
            finally:
                conn.execute("COMMIT")

    def write_batch(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        conn = self._connect()
        # Many rows per INSERT, not executemany: sqlite3 lets go of the GIL around every statement
        # it steps, and a batch of 200 single-row statements handed the GIL back and forth with
        # the event loop 400 times (measured: ~100 µs of the API's CPU per logged request).
        per = _power_of_two_at_most(min(512, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS)))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                start = 0
                while start < len(entries):
                    # Statements of power-of-two sizes: a few INSERTs per batch, at most ten texts cached.
                    size = min(per, _power_of_two_at_most(len(entries) - start))
                    chunk = entries[start : start + size]
                    conn.execute(self._insert_of(size), [value for e in chunk for value in e.row()])
                    start += size
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LogUnavailable(f"cannot write the prediction log {self.path}: {exc}") from None

    def _insert_of(self, rows: int) -> str:
        sql = self._inserts.get(rows)
        if sql is None:
            values = "(" + ", ".join("?" for _ in COLUMNS) + ")"
            sql = f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES " + ", ".join(values for _ in range(rows))
            self._inserts[rows] = sql
        return sql

    def recent(self, limit: int = 100) -> list[LogEntry]:
        rows = (
            self._connect()
            .execute(
                f"SELECT {', '.join(COLUMNS)} FROM (SELECT * FROM {self.table} ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (limit,),
            )
            .fetchall()
        )
        return [
            LogEntry(
                row[0],
                row[1],
                row[2],
                json.loads(row[3]),
                row[4],
                row[5],
                row[6],
                row[7],
                row[8],
                row[9],
                row[10],
                None if row[11] is None else json.loads(row[11]),
            )
            for row in rows
        ]

    def count(self) -> int:
        return self._connect().execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]

    def ping(self) -> None:
        try:
            self._connect().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise LogUnavailable(f"cannot read the prediction log {self.path}: {exc}") from None

    def close(self) -> None:
        self._connections.close_all()

    def teardown(self) -> None:
        self._connect().execute(f"DROP TABLE IF EXISTS {self.table}")
        self.close()
