"""The prediction log: every answered prediction, written in the background (SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from configuration.settings import Settings
from api.prediction_log.base import LogEntry, LogUnavailable, PredictionLog
from api.prediction_log.writer import LogWriter

__all__ = ["LogEntry", "LogUnavailable", "LogWriter", "PredictionLog", "open_prediction_log", "sqlite_log_path"]


def sqlite_log_path(settings: Settings) -> Path:
    """api.prediction_log_sqlite, else <state_dir>/api/predictions.sqlite.

    A folder of its own: the local stack gives it to the unprivileged user the API runs as
    (SQLite writes its -wal and -shm beside the file), and nothing else of the state folder.
    """
    if settings.api.prediction_log_sqlite:
        from configuration.settings import resolve_path

        return Path(resolve_path(settings.api.prediction_log_sqlite))
    return Path(settings.paths.state_dir) / "api" / "predictions.sqlite"


def open_prediction_log(settings: Settings) -> PredictionLog:
    """The configured backend; it connects on first use (from the writer's thread)."""
    api = settings.api
    if api.prediction_log == "postgres":
        from api.prediction_log.postgres_log import PostgresPredictionLog

        return PostgresPredictionLog(api.prediction_log_dsn, api.prediction_log_table)
    from api.prediction_log.sqlite_log import SqlitePredictionLog

    return SqlitePredictionLog(sqlite_log_path(settings), api.prediction_log_table)
