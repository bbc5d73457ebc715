"""The prediction log in PostgreSQL (psycopg 3): a batch is one COPY in one transaction."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence

from api.prediction_log.base import COLUMNS, LogEntry, LogUnavailable, PredictionLog


def _redact(dsn: str) -> str:
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:
        return "(unparsable DSN)"
    return f"postgresql://{parts.get('user', '')}@{parts.get('host', '')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PostgresPredictionLog(PredictionLog):
    kind = "postgres"

    def __init__(self, dsn: str, table: str = "predictions", timeout_seconds: float = 5.0) -> None:
        try:
            import psycopg
        except ImportError:
            raise LogUnavailable(
                "the PostgreSQL prediction log needs the Python package 'psycopg[binary]': pip install 'psycopg[binary]'"
            ) from None
        self._psycopg = psycopg
        self.dsn = dsn
        self.table = table  # checked by the settings' pattern, and quoted as an identifier below
        self.timeout_seconds = timeout_seconds
        self._conn = None
        self._lock = threading.Lock()  # one connection, used by one writer thread (and tests) at a time
        self._schema_ready = False

    def describe(self) -> str:
        return f"postgres prediction log {_redact(self.dsn)} (table {self.table})"

    def _ident(self):
        return self._psycopg.sql.Identifier(self.table)

    def _connect(self):
        if self._conn is not None and not self._conn.closed:
            return self._conn
        psycopg = self._psycopg
        sql = psycopg.sql
        conn = None
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=max(1, int(self.timeout_seconds)), autocommit=True)
            if not self._schema_ready:
                # CREATE ... IF NOT EXISTS races with itself in PostgreSQL (two workers starting at
                # once: a unique violation on pg_type); an advisory lock makes them take turns.
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sparkmaker-prediction-log:{self.table}",)
                    )
                    conn.execute(
                        sql.SQL(
                            """CREATE TABLE IF NOT EXISTS {} (
                            seq BIGSERIAL PRIMARY KEY,
                            ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL, customer_id BIGINT NOT NULL, features JSONB NOT NULL,
                            probability DOUBLE PRECISION NOT NULL, label SMALLINT NOT NULL, threshold DOUBLE PRECISION NOT NULL,
                            model_version TEXT NOT NULL, snapshot_run_id TEXT NOT NULL, snapshot_as_of DATE NOT NULL,
                            latency_ms DOUBLE PRECISION NOT NULL, reasons JSONB)"""
                        ).format(self._ident())
                    )
                    # A log written before explanations existed: add the column (NULL for the old rows).
                    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS reasons JSONB").format(self._ident()))
                    conn.execute(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (ts)").format(
                            sql.Identifier(f"{self.table}_ts"), self._ident()
                        )
                    )
                self._schema_ready = True
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise LogUnavailable(
                f"cannot reach the prediction log at {_redact(self.dsn)}: {str(exc).strip().splitlines()[0]}"
            ) from None
        self._conn = conn
        return conn

    def _run(self, fn):
        psycopg = self._psycopg
        with self._lock:
            conn = self._connect()
            try:
                return fn(conn)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    self._conn = None  # reconnect on the next call
                raise LogUnavailable(
                    f"the prediction log at {_redact(self.dsn)} failed: {str(exc).strip().splitlines()[0]}"
                ) from None

    def write_batch(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        sql = self._psycopg.sql
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            self._ident(), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )

        def write(conn) -> None:
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
                for e in entries:
                    copy.write_row(e.row())

        self._run(write)

    def recent(self, limit: int = 100) -> list[LogEntry]:
        sql = self._psycopg.sql
        query = sql.SQL("SELECT {} FROM (SELECT * FROM {} ORDER BY seq DESC LIMIT %s) t ORDER BY seq").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), self._ident()
        )
        rows = self._run(lambda conn: conn.execute(query, (limit,)).fetchall())
        return [
            LogEntry(_iso(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9].isoformat(), r[10], r[11])
            for r in rows
        ]

    def count(self) -> int:
        sql = self._psycopg.sql
        return self._run(
            lambda conn: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._ident())).fetchone()[0]
        )

    def ping(self) -> None:
        self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def teardown(self) -> None:
        sql = self._psycopg.sql
        self._run(lambda conn: conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident())))
        self._schema_ready = False
        self.close()
