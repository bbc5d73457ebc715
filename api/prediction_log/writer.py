"""The background writer of the prediction log: a bounded queue drained by one thread in batches.

`submit` never blocks and never raises: when the queue is full the entry is dropped and
counted (`dropped`), because the issue puts the answer before its log line. The thread
writes a batch when `flush_entries` entries wait or `flush_ms` after the oldest waiting
entry arrived, and drains everything on `close()` (the API's shutdown).

Loss window: an entry is in memory from its answer until its batch commits. A process
that is killed (SIGKILL, OOM, power loss) loses the entries of at most the last
`flush_ms` milliseconds (default 200 ms; at most `flush_entries` plus what arrived while
that batch was being written). A graceful stop (SIGTERM) loses nothing. While the
database is unreachable, batches are kept and retried every `flush_ms`, up to
`queue_max` entries in memory; beyond that the oldest are dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from api.prediction_log.base import LogEntry, LogUnavailable, PredictionLog

log = logging.getLogger("api.prediction_log")
_STOP = object()


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
        self._queue: queue.Queue = queue.Queue(maxsize=queue_max)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None
        self._closed = False

    def start(self) -> "LogWriter":
        self._thread.start()
        return self

    def submit(self, entry: LogEntry) -> bool:
        """Queue an entry; False (and counted) when it had to be dropped. Never blocks, never raises."""
        if self._closed:
            self._drop(1)
            return False
        try:
            self._queue.put_nowait(entry)
            return True
        except queue.Full:
            self._drop(1)
            return False

    def waiting(self) -> int:
        return self._queue.qsize()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._on_dropped(count)

    def close(self, timeout: float = 20.0) -> None:
        """Write everything queued, then stop the thread (at most `timeout` seconds)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    if time.monotonic() > deadline:
                        break
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.backend.close()

    def _flush(self, pending: list[LogEntry]) -> bool:
        try:
            self.backend.write_batch(pending)
        except LogUnavailable as exc:
            self.failures += 1
            if self.last_error != str(exc):  # once per distinct problem, not once per retry
                log.error("prediction log write failed, will retry: %s", exc, extra={"entries": len(pending)})
            self.last_error = str(exc)
            return False
        except Exception as exc:  # never let the thread die: it would silently stop the log
            self.failures += 1
            log.exception("prediction log write failed unexpectedly", extra={"entries": len(pending)})
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        if self.last_error is not None:
            log.info("prediction log writes again", extra={"entries": len(pending)})
        self.last_error = None
        self.written += len(pending)
        self._on_written(len(pending))
        return True

    def _run(self) -> None:
        pending: list[LogEntry] = []
        oldest = 0.0
        stopping = False
        while True:
            if pending:
                wait = max(0.0, oldest + self.interval - time.monotonic())
            else:
                wait = 0.5
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = None
            if item is _STOP:
                stopping = True
            elif item is not None:
                if not pending:
                    oldest = time.monotonic()
                pending.append(item)
                # Take whatever else is already queued without waiting, up to a batch.
                while len(pending) < self.flush_entries:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stopping = True
                        break
                    pending.append(more)
            if stopping:
                while True:  # everything still queued goes in the final batches
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is not _STOP:
                        pending.append(more)
                for start in range(0, len(pending), max(self.flush_entries, 1000)):
                    chunk = pending[start : start + max(self.flush_entries, 1000)]
                    if not self._flush(chunk) and not self._flush(chunk):
                        self._drop(len(pending) - start)
                        log.error("prediction log: %d entries lost at shutdown: %s", len(pending) - start, self.last_error)
                        break
                return
            if pending and (len(pending) >= self.flush_entries or time.monotonic() - oldest >= self.interval):
                if self._flush(pending):
                    pending = []
                else:
                    oldest = time.monotonic()  # retry one interval later
                    excess = len(pending) - self.queue_max
                    if excess > 0:
                        del pending[:excess]
                        self._drop(excess)
