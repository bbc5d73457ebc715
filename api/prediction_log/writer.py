"""The background writer of the prediction log: a bounded buffer drained by one thread in batches.

`submit` never blocks and never raises: when `queue_max` entries already wait, the entry
is dropped and counted (`dropped`), because the issue puts the answer before its log line.
The buffer is a `collections.deque` (an append is atomic under the GIL and wakes no one):
the thread wakes every `flush_ms`, or at once when `flush_entries` entries wait, and writes
what is there in one transaction; `close()` (the API's shutdown) writes everything left.
A `queue.Queue` would wake the thread for every entry, which costs the request path more
than the log line itself.

Loss window: an entry is in memory from its answer until its batch commits. A process
that is killed (SIGKILL, OOM, power loss) loses the entries of at most the last
`flush_ms` milliseconds (default 200 ms) plus the batch being written at that moment. A
graceful stop (SIGTERM) loses nothing. While the database is unreachable, entries are
kept and retried every `flush_ms`, up to `queue_max` in memory; beyond that new entries
are dropped and counted (metric api_prediction_log_dropped_total).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from api.prediction_log.base import LogEntry, LogUnavailable, PredictionLog

log = logging.getLogger("api.prediction_log")


class LogWriter:
    def __init__(
        self,
        backend: PredictionLog,
        flush_entries: int = 200,
        flush_ms: int = 200,
        queue_max: int = 20000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.backend = backend
        self.flush_entries = flush_entries
        self.interval = flush_ms / 1000
        self.queue_max = queue_max
        self._buffer: collections.deque[LogEntry] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> "LogWriter":
        self._thread.start()
        return self

    def submit(self, entry: LogEntry) -> bool:
        """Queue an entry; False (and counted) when it had to be dropped. Never blocks, never raises."""
        waiting = len(self._buffer)
        if self._stop.is_set() or waiting >= self.queue_max:
            self._drop(1)
            return False
        self._buffer.append(entry)
        if waiting + 1 == self.flush_entries:
            self._wake.set()
        return True

    def waiting(self) -> int:
        return len(self._buffer)

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._on_dropped(count)

    def close(self, timeout: float = 20.0) -> None:
        """Write everything queued, then stop the thread (at most `timeout` seconds)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.backend.close()

    def _take(self, limit: int) -> list[LogEntry]:
        batch: list[LogEntry] = []
        buffer = self._buffer
        while buffer and len(batch) < limit:
            batch.append(buffer.popleft())
        return batch

    def _write(self, batch: list[LogEntry]) -> bool:
        try:
            self.backend.write_batch(batch)
        except LogUnavailable as exc:
            self.failures += 1
            if self.last_error != str(exc):  # once per distinct problem, not once per retry
                log.error("prediction log write failed, will retry: %s", exc, extra={"entries": len(batch)})
            self.last_error = str(exc)
            return False
        except Exception as exc:  # never let the thread die: it would silently stop the log
            self.failures += 1
            log.exception("prediction log write failed unexpectedly", extra={"entries": len(batch)})
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        if self.last_error is not None:
            log.info("prediction log writes again", extra={"entries": len(batch)})
        self.last_error = None
        self.written += len(batch)
        self._on_written(len(batch))
        return True

    def _drain(self) -> bool:
        """Write what waits, in batches; on failure put the batch back in front (kept, retried later)."""
        limit = max(self.flush_entries, 1000)
        while self._buffer:
            batch = self._take(limit)
            if not self._write(batch):
                self._buffer.extendleft(reversed(batch))
                excess = len(self._buffer) - self.queue_max
                for _ in range(max(0, excess)):  # newest beyond the bound go: the order of what is kept stays
                    self._buffer.pop()
                if excess > 0:
                    self._drop(excess)
                return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
        if not self._drain() and not self._drain():
            lost = len(self._buffer)
            self._buffer.clear()
            self._drop(lost)
            log.error("prediction log: %d entries lost at shutdown: %s", lost, self.last_error)
