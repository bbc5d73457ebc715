"""Reading the prediction log back for monitoring: the served predictions since a time, as a DataFrame.

Same interface for both backends (`open_prediction_reader(settings)`); the writer side
(`PredictionLog`) stays as it is. A log that does not exist yet, or whose table was never
created, reads as empty: no prediction was served. A database that cannot be reached
raises `LogUnavailable` (one line).
"""

from __future__ import annotations

import abc
import datetime as dt
import sqlite3
from pathlib import Path

from api.prediction_log.base import LogUnavailable
from configuration.settings import Settings

SERVED_COLUMNS: tuple[str, ...] = (
    "ts",
    "customer_id",
    "probability",
    "label",
    "threshold",
    "model_version",
    "snapshot_as_of",
)


def _frame(rows: list[tuple]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(SERVED_COLUMNS))
    return frame.astype(
        {
            "customer_id": "int64",
            "probability": "float64",
            "label": "int64",
            "threshold": "float64",
            "model_version": "str",
            "snapshot_as_of": "str",
            "ts": "str",
        }
    )


def iso_utc(moment: dt.datetime) -> str:
    """The log's own time format (ISO 8601 UTC with microseconds and Z), which sorts as text."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PredictionReader(abc.ABC):
    @abc.abstractmethod
    def served(self, since: dt.datetime | None = None):
        """A DataFrame of SERVED_COLUMNS, one row per served prediction with ts >= since (all when None), in write order."""

    @abc.abstractmethod
    def describe(self) -> str: ...


class SqlitePredictionReader(PredictionReader):
    def __init__(self, path: Path, table: str = "predictions") -> None:
        self.path = Path(path)
        self.table = table  # checked by the settings' pattern

    def describe(self) -> str:
        return f"sqlite prediction log {self.path} (table {self.table})"

    def served(self, since: dt.datetime | None = None):
        if not self.path.is_file():
            return _frame([])
        query = f"SELECT {', '.join(SERVED_COLUMNS)} FROM {self.table}"
        params: tuple = ()
        if since is not None:
            query += " WHERE ts >= ?"
            params = (iso_utc(since),)
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            try:
                known = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
                ).fetchone()
                rows = conn.execute(query + " ORDER BY seq", params).fetchall() if known else []
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise LogUnavailable(f"cannot read the prediction log {self.path}: {exc}") from None
        return _frame(rows)


class PostgresPredictionReader(PredictionReader):
    def __init__(self, dsn: str, table: str = "predictions", timeout_seconds: float = 5.0) -> None:
        from api.prediction_log.postgres_log import _redact

        self.dsn = dsn
        self.table = table
        self.timeout_seconds = timeout_seconds
        self._where = _redact(dsn)

    def describe(self) -> str:
        return f"postgres prediction log {self._where} (table {self.table})"

    def served(self, since: dt.datetime | None = None):
        import psycopg
        from psycopg import sql

        columns = sql.SQL(", ").join(map(sql.Identifier, SERVED_COLUMNS))
        query = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(self.table))
        params: tuple = ()
        if since is not None:
            query += sql.SQL(" WHERE ts >= %s")
            params = (since,)
        query += sql.SQL(" ORDER BY seq")
        try:
            with psycopg.connect(self.dsn, connect_timeout=max(1, int(self.timeout_seconds))) as conn:
                regclass = conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()
                if regclass is None:  # a SELECT without FROM always returns one row
                    raise RuntimeError("SELECT to_regclass returned no row")
                known = regclass[0]
                rows = conn.execute(query, params).fetchall() if known else []
        except psycopg.Error as exc:
            raise LogUnavailable(
                f"cannot read the prediction log at {self._where}: {str(exc).strip().splitlines()[0]}"
            ) from None
        return _frame([(iso_utc(r[0]), *r[1:6], r[6].isoformat()) for r in rows])


def open_prediction_reader(settings: Settings) -> PredictionReader:
    api = settings.api
    if api.prediction_log == "postgres":
        return PostgresPredictionReader(api.prediction_log_dsn, api.prediction_log_table)
    from api.prediction_log import sqlite_log_path

    return SqlitePredictionReader(sqlite_log_path(settings), api.prediction_log_table)
