"""Request ids, structured JSON logs and Prometheus metrics, wired in by one pure-ASGI middleware.

The middleware is plain ASGI rather than Starlette's BaseHTTPMiddleware, which copies
every request through an extra task and costs more than the rest of a prediction.
Metrics live in a registry of their own per app (not the process-global one), so two apps
in one process (tests) do not collide. With several uvicorn workers each worker counts
its own requests: scrape them one by one, or run one worker per container.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.datastructures import MutableHeaders

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_HEADER_RAW = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    started: float  # time.perf_counter() when the request arrived


CURRENT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("api_request", default=None)


class RequestIds:
    """New request ids: 32 hex digits of the OS's random bytes, read 4 KiB at a time.

    As random as uuid4 (the same os.urandom) without a system call and a UUID object per
    request: one read serves 256 ids. Random rather than a counter, so that ids tell a
    client nothing about the traffic between two of its requests.
    """

    _SIZE = 16

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()  # one server thread in practice; the lock keeps ids unique in any case

    def next(self) -> str:
        with self._lock:
            if self._at >= len(self._pool):
                self._pool, self._at = os.urandom(self._SIZE * self._batch), 0
            at = self._at
            self._at = at + self._SIZE
            return self._pool[at : at + self._SIZE].hex()

    def forget(self) -> None:
        self._pool, self._at = b"", 0


_REQUEST_IDS = RequestIds()
os.register_at_fork(after_in_child=_REQUEST_IDS.forget)  # a forked child must not hand out its parent's ids
new_request_id = _REQUEST_IDS.next


def current_request_id() -> str:
    context = CURRENT.get()
    return context.request_id if context else ""


def elapsed_ms() -> float:
    context = CURRENT.get()
    return (time.perf_counter() - context.started) * 1000 if context else 0.0


# Logs -------------------------------------------------------------------------------------
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


_STANDARD = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)  # attributes every record has, first


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any `extra` fields.

    It runs for every request (the access line): the time's seconds are formatted once per
    second, and only the attributes after the standard ones (`extra`, which makeRecord adds
    last, in order) are looked at.
    """

    _second = -1
    _second_text = ""

    def timestamp(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int(msecs):03d}Z"

    def entry(self, created: float, msecs: float, level: str, name: str, message: str) -> dict[str, Any]:
        """A line's leading fields, in their order: time, level, logger, message, and the request id when there is one."""
        entry: dict[str, Any] = {
            "ts": self.timestamp(created, msecs),
            "level": level,
            "logger": name,
            "message": message,
        }
        request_id = current_request_id()
        if request_id:
            entry["request_id"] = request_id
        return entry

    def format(self, record: logging.LogRecord) -> str:
        entry = self.entry(record.created, record.msecs, record.levelname, record.name, record.getMessage())
        for key, value in itertools.islice(record.__dict__.items(), _STANDARD, None):
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)  # to the log only, never to a client
        return _dump_line(entry)


class JsonLogHandler(logging.StreamHandler):
    """The JSON log's handler (configure_logging), which also takes access lines straight from RequestMiddleware.

    An access line through `Logger.info` builds a LogRecord and walks the logger tree, the
    filters and the handler's locks: under load that cost more CPU than the store read (45-65 µs
    a request against 35-45; benchmarks/README.md, Prediction API, 2026-12-07). `access_line`
    writes the same JSON object (the same keys, in the same order, as `JsonFormatter` makes of
    the record) to the same stream, one line and one flush each, when nothing between the
    `api.access` logger and this handler could change or stop it (`takes_directly`); otherwise
    the middleware logs it the usual way.
    """

    formatter: JsonFormatter

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())

    def takes_directly(self, logger: logging.Logger) -> bool:
        """Whether `logger`'s INFO records reach this handler alone, unchanged, and nothing else."""
        if logging.INFO < self.level or not logger.isEnabledFor(logging.INFO) or self.filters:
            return False
        node: logging.Logger | None = logger
        while node is not None:
            if node.filters or node.disabled:
                return False
            if node.handlers:
                return node.handlers == [self] and node.parent is None  # the root's, as configure_logging sets it
            if not node.propagate:
                return False
            node = node.parent
        return False

    def access_line(self, name: str, method: str, path: str, template: str, status: int, ms: float) -> None:
        created = time.time()
        entry = self.formatter.entry(
            created, (created - int(created)) * 1000, "INFO", name, f"{method} {path} {status}"
        )
        entry.update(method=method, path=path, route=template, status=status, ms=ms)  # `extra`'s order
        line = _dump_line(entry) + self.terminator
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line)
                self.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": line, "name": name}))


_dump_line = json.JSONEncoder(default=str).encode  # json.dumps(entry, default=str), its encoder made once


def configure_logging(level: str = "INFO") -> None:
    # The logging HOWTO's optimizations: the formatter prints none of the caller's file and line,
    # thread or process, and finding them costs more than the rest of a request's access line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = JsonLogHandler(sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # the middleware writes the access log
    # httpx logs every model call at INFO: a second line per request, with nothing the access line lacks.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


# Metrics ----------------------------------------------------------------------------------
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "api_requests", "HTTP requests by route, method and status.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "api_request_duration_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "api_model_call_duration_seconds",
            "Time of one call to the model endpoint.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter("api_predictions", "Customers scored.", registry=r)
        self.model_shared_calls = Counter(
            "api_model_shared_calls",
            "Model calls shared by the predictions of one event-loop turn (api.model_batching).",
            registry=r,
        )
        self.model_shared_predictions = Counter(
            "api_model_shared_predictions", "Predictions answered by a shared model call.", registry=r
        )
        self.errors = Counter("api_prediction_errors", "Failed predictions by cause.", ["cause"], registry=r)
        self.model = Info("api_model", "The model version that answered the last prediction.", registry=r)
        self.snapshot = Info("api_feature_snapshot", "The feature snapshot of the last prediction.", registry=r)
        self.log_dropped = Counter(
            "api_prediction_log_dropped",
            "Prediction-log entries dropped (queue full or database unreachable too long).",
            registry=r,
        )
        self.log_written = Counter("api_prediction_log_written", "Prediction-log entries written.", registry=r)
        self.log_queue = Gauge("api_prediction_log_queue", "Prediction-log entries waiting to be written.", registry=r)
        self.auth_failures = Counter("api_auth_failures", "Requests refused for a wrong API key (401).", registry=r)
        self.auth_throttled = Counter(
            "api_auth_throttled",
            "Requests refused (429) because their address failed authentication too often.",
            registry=r,
        )
        self._model_version: str | None = None
        self._snapshot: tuple[str, str] | None = None

    def saw_shared_call(self, predictions: int) -> None:
        self.model_shared_calls.inc()
        self.model_shared_predictions.inc(predictions)

    def saw_model(self, version: str) -> None:
        if version != self._model_version:
            self._model_version = version
            self.model.info({"version": version})

    def saw_snapshot(self, run_id: str, as_of: str) -> None:
        if (run_id, as_of) != self._snapshot:
            self._snapshot = (run_id, as_of)
            self.snapshot.info({"run_id": run_id, "as_of": as_of})


class RequestMiddleware:
    """Request id in and out (X-Request-ID), one access-log line and the request metrics per request.

    `on_bug`, called inside the `except` of an exception the app let through before answering,
    gives the 500 to send (api.errors.unexpected_failure, which logs the traceback): sent from
    here, the 500 and that log line carry the request's id, which they would not from
    Starlette's ServerErrorMiddleware, outside this one.
    """

    def __init__(
        self, app, metrics: Metrics, logger_name: str = "api.access", on_bug: Callable[[], Any] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.on_bug = on_bug
        self.log = logging.getLogger(logger_name)
        self._children: dict[tuple[str, str, int], tuple] = {}  # (route, method, status) -> the labelled metrics

    def _observe(self, template: str, method: str, status: int, seconds: float) -> None:
        # Labelled children looked up once per label set (prometheus_client locks and hashes on every labels()).
        key = (template, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.requests.labels(template, method, str(status)),
                self.metrics.latency.labels(template),
            )
            if len(self._children) < 10_000:  # bounded, whatever the label sets
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or new_request_id()
        started = time.perf_counter()
        token = CURRENT.set(RequestContext(request_id, started))
        status = 500  # what the client gets if the app fails before answering
        answered = False
        header = (REQUEST_ID_HEADER_RAW, request_id.encode("latin-1"))

        async def send_with_id(message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                headers = message.get("headers") or []
                if any(name.lower() == REQUEST_ID_HEADER_RAW for name, _ in headers):
                    MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
                else:  # the usual case: appended, without building a MutableHeaders
                    message["headers"] = [*headers, header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if self.on_bug is None or answered:
                raise
            await self.on_bug()(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"  # the template, never the raw path: bounded labels
            method = scope["method"]
            self._observe(template, method, status, seconds)
            self.access_line(method, scope["path"], template, status, round(seconds * 1000, 3))
            CURRENT.reset(token)

    def access_line(self, method: str, path: str, template: str, status: int, ms: float) -> None:
        root_handlers = logging.root.handlers
        handler = root_handlers[0] if len(root_handlers) == 1 else None
        if isinstance(handler, JsonLogHandler) and handler.takes_directly(self.log):
            handler.access_line(self.log.name, method, path, template, status, ms)
        elif self.log.isEnabledFor(logging.INFO):
            self.log.info(
                "%s %s %d",
                method,
                path,
                status,
                extra={"method": method, "path": path, "route": template, "status": status, "ms": ms},
            )


# Monitoring figures ---------------------------------------------------------------------------
class MonitoringCollector:
    """The latest stored drift and realized-quality figures (monitoring.figures) as gauges, read at scrape time.

    A scrape costs one stat() of latest.json (re-read only when it changed), never a
    computation. Labels are feature names, comparisons and model versions only: bounded,
    and no customer or snapshot ids. Nothing is exported before the first drift step, and a
    figure that could not be measured (too few rows, no production model) is absent, not 0.
    """

    def __init__(self, settings) -> None:
        from monitoring.figures import LatestFigures

        self._latest = LatestFigures(settings)

    def describe(self):
        return []  # names vary with the stored figures: nothing to check at registration

    def collect(self):
        import datetime as dt

        from prometheus_client.core import GaugeMetricFamily

        figures = self._latest.get()
        if not figures:
            return

        def family(name: str, doc: str, labels: list[str], rows, value_key: str):
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            for row in rows:
                value = row.get(value_key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    gauge.add_metric([str(row[label]) for label in labels], float(value))
            return gauge

        drift = figures.get("drift", [])
        by = ["feature", "comparison"]
        yield family(
            "sparkmaker_feature_drift_psi",
            "Population stability index of a feature against its reference.",
            by,
            drift,
            "psi",
        )
        yield family(
            "sparkmaker_feature_drift_ks",
            "Two-sample Kolmogorov-Smirnov statistic of a feature.",
            by,
            drift,
            "ks_statistic",
        )
        yield family(
            "sparkmaker_feature_drift_ks_pvalue",
            "p-value of the Kolmogorov-Smirnov test of a feature.",
            by,
            drift,
            "ks_pvalue",
        )
        yield family(
            "sparkmaker_feature_missing_share_change",
            "Change in a feature's share of missing values.",
            by,
            drift,
            "missing_share_change",
        )
        levels = [{**r, "level": {"ok": 0, "warn": 1, "alert": 2}.get(r["status"])} for r in drift]
        yield family(
            "sparkmaker_feature_drift_level", "Drift level of a feature: 0 ok, 1 warn, 2 alert.", by, levels, "level"
        )
        prediction = [figures["prediction"]] if figures.get("prediction") else []
        yield family(
            "sparkmaker_prediction_drift_psi",
            "PSI of the served probabilities against the validation scores.",
            [],
            prediction,
            "psi",
        )
        yield family(
            "sparkmaker_prediction_drift_ks",
            "KS statistic of the served probabilities against the validation scores.",
            [],
            prediction,
            "ks_statistic",
        )
        yield family(
            "sparkmaker_served_positive_share",
            "Share of positive labels served in the prediction-drift window.",
            [],
            prediction,
            "served_positive_share",
        )
        quality = figures.get("quality", [])
        yield family(
            "sparkmaker_realized_roc_auc",
            "ROC-AUC of the served predictions against their realized outcomes.",
            ["model_version"],
            quality,
            "roc_auc",
        )
        yield family(
            "sparkmaker_realized_brier",
            "Brier score of the served predictions against their realized outcomes.",
            ["model_version"],
            quality,
            "brier",
        )
        yield family(
            "sparkmaker_realized_matched_predictions",
            "Served predictions matched with an outcome.",
            ["model_version"],
            quality,
            "matched_predictions",
        )
        yield family(
            "sparkmaker_drift_alert",
            "1 when the latest drift step alerted (retraining due), else 0.",
            [],
            [{"alert": 1.0 if figures.get("alert") else 0.0}],
            "alert",
        )
        try:
            stamp = dt.datetime.fromisoformat(str(figures.get("computed_at", ""))).timestamp()
        except ValueError:
            return
        yield family(
            "sparkmaker_monitoring_last_run_timestamp_seconds",
            "When the latest drift step ran (Unix time).",
            [],
            [{"t": stamp}],
            "t",
        )
