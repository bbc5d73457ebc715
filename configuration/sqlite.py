"""SQLite connections as the project's backends use them: one per thread, WAL, bounded waits.

Shared by the SQLite online store (features.online.sqlite_store) and the SQLite prediction
log (api.prediction_log.sqlite_log). Why each setting:
- one connection per thread: sqlite3 connection objects must not be used by two threads
  at once, and the API calls its backends from a thread pool;
- autocommit (isolation_level=None): the callers open their own transactions (BEGIN
  IMMEDIATE), so that a writer takes the write lock up front rather than half-way;
- WAL: readers go on while a writer writes. Switching a file to WAL needs a moment alone
  with it, and SQLite answers "database is locked" at once (without its busy handler)
  when another connection is busy, which happens when several workers open a new file
  together; so the switch is retried until the timeout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


def open_connection(path: Path, timeout_seconds: float) -> sqlite3.Connection:
    """A connection to `path` (its folder created) in WAL mode; sqlite3.Error or OSError when it cannot be had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_seconds, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_seconds * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        _use_wal(conn, timeout_seconds)
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    pause = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return  # persistent in the file: set once
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError(
                f"could not switch to WAL journaling within {timeout_seconds:g} s: database is locked"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class ThreadConnections:
    """One connection per thread to one file, all closed together."""

    def __init__(self, path: Path, timeout_seconds: float) -> None:
        self.path = Path(path)
        self.timeout_seconds = timeout_seconds
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> tuple[sqlite3.Connection, bool]:
        """This thread's connection, and whether it was opened by this call (to set up a schema once)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, False
        conn = open_connection(self.path, self.timeout_seconds)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn, True

    def forget_this_thread(self) -> None:
        """Drop this thread's connection (after its set-up failed), closing it."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
