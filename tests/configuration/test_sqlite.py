"""configuration.sqlite: many workers opening one new file together, and the errors it passes on."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from configuration.sqlite import ThreadConnections, open_connection


def test_many_threads_opening_a_new_file_together_all_get_wal(tmp_path):
    for attempt in range(5):  # each attempt a fresh file: the switch to WAL is what races
        path = tmp_path / f"new-{attempt}" / "db.sqlite"
        barrier = threading.Barrier(12)
        modes: list[str] = []
        errors: list[Exception] = []

        def open_one() -> None:
            barrier.wait()
            try:
                conn = open_connection(path, timeout_seconds=5)
                conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                conn.execute("INSERT INTO t VALUES (1)")
                modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
                conn.close()
            except Exception as exc:  # collected: the assertion names it
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors[0]
        assert modes == ["wal"] * 12
        with sqlite3.connect(path) as check:
            assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 12


def test_a_path_that_cannot_be_a_database_raises_sqlites_error(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        open_connection(tmp_path / "taken", timeout_seconds=0.2)


def test_each_thread_has_its_own_connection_and_close_all_closes_them(tmp_path):
    connections = ThreadConnections(tmp_path / "db.sqlite", timeout_seconds=1)
    mine, opened = connections.get()
    again, opened_again = connections.get()
    assert opened and not opened_again and again is mine
    theirs: list[sqlite3.Connection] = []
    worker = threading.Thread(target=lambda: theirs.append(connections.get()[0]))
    worker.start()
    worker.join(10)
    assert theirs and theirs[0] is not mine
    connections.close_all()
    for conn in (mine, theirs[0]):
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    fresh, opened = connections.get()  # usable again after close_all
    assert opened and fresh is not mine
    connections.close_all()
