"""The prediction-log reader: one suite both backends must pass, written through the real log backends."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from api.prediction_log.base import LogEntry, LogUnavailable
from api.prediction_log.postgres_log import PostgresPredictionLog
from api.prediction_log.reader import PostgresPredictionReader, SqlitePredictionReader
from api.prediction_log.sqlite_log import SqlitePredictionLog


def entry(ts: str, customer: int, p: float, version: str = "3", as_of: str = "2024-01-31") -> LogEntry:
    return LogEntry(ts, uuid.uuid4().hex, customer, {"age": 40}, p, int(p >= 0.5), 0.5, version, "run-1", as_of, 1.0)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """(log writer, reader) over the same real table."""
    table = f"monitoring_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        path = tmp_path / "log.sqlite"
        log = SqlitePredictionLog(path, table)
        yield log, SqlitePredictionReader(path, table)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        log = PostgresPredictionLog(dsn, table)
        yield log, PostgresPredictionReader(dsn, table)
    log.teardown()


def test_reads_what_was_written_in_order_and_filters_by_time(backend):
    log, reader = backend
    log.write_batch(
        [
            entry("2024-02-01T10:00:00.000000Z", 11, 0.25),
            entry("2024-02-01T12:30:00.500000Z", 12, 0.75, version="4", as_of="2024-02-01"),
            entry("2024-02-02T08:00:00.000001Z", 11, 0.125),
        ]
    )
    served = reader.served()
    assert served["customer_id"].tolist() == [11, 12, 11]
    assert served["probability"].tolist() == [0.25, 0.75, 0.125]
    assert served["label"].tolist() == [0, 1, 0]
    assert served["model_version"].tolist() == ["3", "4", "3"]
    assert served["snapshot_as_of"].tolist() == ["2024-01-31", "2024-02-01", "2024-01-31"]
    assert served["ts"].tolist() == [
        "2024-02-01T10:00:00.000000Z",
        "2024-02-01T12:30:00.500000Z",
        "2024-02-02T08:00:00.000001Z",
    ]
    since = dt.datetime(2024, 2, 1, 12, 30, 0, 500000, tzinfo=dt.UTC)
    assert reader.served(since)["customer_id"].tolist() == [12, 11]  # ts >= since
    assert reader.served(since + dt.timedelta(days=5)).empty


def test_a_log_never_written_reads_as_empty(backend):
    _, reader = backend
    served = reader.served()
    assert served.empty and list(served.columns) == [
        "ts",
        "customer_id",
        "probability",
        "label",
        "threshold",
        "model_version",
        "snapshot_as_of",
    ]


def test_an_unreachable_database_is_one_line(tmp_path):
    reader = PostgresPredictionReader("postgresql://postgres@127.0.0.1:1/postgres", "monitoring_x", timeout_seconds=1)
    with pytest.raises(LogUnavailable) as caught:
        reader.served()
    assert "cannot read the prediction log at postgresql://postgres@127.0.0.1:1/postgres" in str(caught.value)
    assert "\n" not in str(caught.value)
    (tmp_path / "broken.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(LogUnavailable):
        SqlitePredictionReader(tmp_path / "broken.sqlite").served()
