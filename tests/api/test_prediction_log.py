"""The shared suite of the prediction-log backends (SQLite, PostgreSQL) and of the background writer."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from api.prediction_log import LogEntry, LogUnavailable, LogWriter
from tests.api.conftest import CUSTOMERS, deploy, teardown_deployment
from tests.online.conftest import closed_port

BACKENDS = ("sqlite", "postgres")


def make_log(kind: str, tmp_path, request, table: str | None = None, **kw):
    table = table or f"predictions_{uuid.uuid4().hex[:10]}"
    if kind == "postgres":
        from api.prediction_log.postgres_log import PostgresPredictionLog

        return PostgresPredictionLog(kw.pop("dsn", None) or request.getfixturevalue("postgres_dsn"), table, **kw)
    from api.prediction_log.sqlite_log import SqlitePredictionLog

    return SqlitePredictionLog(kw.pop("path", None) or tmp_path / "log" / "predictions.sqlite", table, **kw)


@pytest.fixture(params=BACKENDS)
def log_backend(request, tmp_path):
    backend = make_log(request.param, tmp_path, request)
    yield backend
    try:
        backend.teardown()
    except LogUnavailable:
        pass


def entry(i: int, **kw) -> LogEntry:
    values = dict(
        ts=f"2026-01-02T03:04:{i % 60:02d}.{i:06d}Z",
        request_id=f"req-{i}",
        customer_id=5_008_804 + i,
        features={
            "nb_previous_loans": i,
            "avg_amount_loans_previous": None if i % 2 else 1234.5,
            "age": 40,
            "years_on_the_job": None,
            "flag_own_car": 1,
        },
        probability=i / 1000,
        label=int(i % 3 == 0),
        threshold=0.25,
        model_version="7",
        snapshot_run_id="20240131T000000Z-abc123",
        snapshot_as_of="2024-01-31",
        latency_ms=1.25 + i,
    )
    values.update(kw)
    return LogEntry(**values)


def test_a_batch_reads_back_field_for_field_in_order(log_backend):
    entries = [entry(i) for i in range(25)]
    log_backend.write_batch(entries[:10])
    log_backend.write_batch(entries[10:])
    log_backend.write_batch([])
    assert log_backend.count() == 25
    assert log_backend.recent(100) == entries
    assert log_backend.recent(5) == entries[-5:]


def test_unreachable_database_is_log_unavailable(request, tmp_path):
    for kind in BACKENDS:
        if kind == "postgres":
            backend = make_log(
                kind,
                tmp_path,
                request,
                dsn=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
                timeout_seconds=1,
            )
        else:
            blocker = tmp_path / "blocker"
            blocker.write_text("x")
            backend = make_log(kind, tmp_path, request, path=blocker / "p.sqlite")
        with pytest.raises(LogUnavailable):
            backend.write_batch([entry(1)])
        with pytest.raises(LogUnavailable):
            backend.ping()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_writer_flushes_by_count_without_waiting_for_the_interval(log_backend):
    writer = LogWriter(log_backend, flush_entries=10, flush_ms=30_000, queue_max=1000).start()
    try:
        for i in range(9):
            assert writer.submit(entry(i))
        time.sleep(0.3)
        assert log_backend.count() == 0  # below a batch, within the interval: still waiting
        writer.submit(entry(9))
        wait_for(lambda: log_backend.count() == 10, timeout=3)  # the tenth entry triggers the write
    finally:
        writer.close()
    assert writer.written == 10 and writer.dropped == 0


def test_writer_flushes_a_lone_entry_within_the_interval(log_backend):
    writer = LogWriter(log_backend, flush_entries=1000, flush_ms=200, queue_max=1000).start()
    try:
        writer.submit(entry(1))
        started = time.monotonic()
        wait_for(lambda: log_backend.count() == 1, timeout=5)
        assert time.monotonic() - started < 1.5
    finally:
        writer.close()


def test_writer_close_writes_everything_queued(log_backend):
    writer = LogWriter(log_backend, flush_entries=10_000, flush_ms=60_000, queue_max=10_000).start()
    entries = [entry(i) for i in range(3000)]
    for e in entries:
        writer.submit(e)
    writer.close()
    assert log_backend.count() == 3000
    assert log_backend.recent(3000) == entries
    assert not writer.submit(entry(1))  # after close: refused and counted, not raised
    assert writer.dropped == 1


def test_submit_never_blocks_and_drops_when_full(log_backend):
    gate = threading.Event()
    original = log_backend.write_batch

    def slow_write(batch):
        gate.wait(10)
        original(batch)

    log_backend.write_batch = slow_write
    writer = LogWriter(log_backend, flush_entries=5, flush_ms=10, queue_max=20).start()
    try:
        started = time.perf_counter()
        accepted = sum(writer.submit(entry(i)) for i in range(200))
        assert time.perf_counter() - started < 0.5  # 200 submits against a stuck database: no waiting
        assert accepted < 200 and writer.dropped == 200 - accepted
    finally:
        gate.set()
        writer.close()
    assert log_backend.count() == accepted


def test_writer_retries_while_the_database_is_down_and_keeps_the_entries(log_backend):
    original = log_backend.write_batch
    down = [True]

    def flaky(batch):
        if down[0]:
            raise LogUnavailable("database down (test)")
        original(batch)

    log_backend.write_batch = flaky
    writer = LogWriter(log_backend, flush_entries=5, flush_ms=20, queue_max=1000).start()
    try:
        for i in range(12):
            writer.submit(entry(i))
        wait_for(lambda: writer.failures >= 3)
        assert log_backend.count() == 0
        down[0] = False
        wait_for(lambda: log_backend.count() == 12)
    finally:
        writer.close()
    assert [e.request_id for e in log_backend.recent(100)] == [f"req-{i}" for i in range(12)]
    assert writer.dropped == 0


def test_many_writers_creating_the_table_at_once_all_succeed(request, tmp_path):
    """Several API workers starting together each create the table if absent: none may fail."""
    for kind in BACKENDS:
        first = make_log(kind, tmp_path, request)
        logs = [first] + [
            make_log(kind, tmp_path, request, table=first.table) for _ in range(5)
        ]  # separate connections
        errors: list[Exception] = []
        barrier = threading.Barrier(len(logs))

        def create(log) -> None:
            barrier.wait()
            try:
                log.write_batch([entry(1)])
            except Exception as exc:  # collected: the assertion below names it
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(log,)) for log in logs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert not errors, errors[0]
            assert first.count() == len(logs)
        finally:
            first.teardown()
            for log in logs:
                log.close()


def test_the_sqlite_log_and_its_new_folder_are_private(request, tmp_path, model_server):
    """Customer features are in the log: 0600 for the file (and SQLite's -wal/-shm beside it), 0700 for a folder it creates."""
    import stat

    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url)
    try:
        assert deployed.get(f"/predict/{CUSTOMERS[0]}").status_code == 200
        path = Path(deployed.settings.api.prediction_log_sqlite)
        deadline = time.monotonic() + 10
        while not path.with_name(path.name + "-wal").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        teardown_deployment(deployed)
