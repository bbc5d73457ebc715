"""The prediction log's interface: one row per answered prediction, written in batches.

Backends (`SqlitePredictionLog`, `PostgresPredictionLog`) create their table when it is
missing and write a batch in one transaction; `LogWriter` (api.prediction_log.writer)
feeds them from a background thread so the API never waits for them.
"""

from __future__ import annotations

import json

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from configuration.errors import UserError


class LogUnavailable(UserError):
    """The log's database cannot be reached or refused the write."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    ts: str  # ISO 8601 UTC with microseconds, e.g. 2026-01-31T12:00:00.123456Z
    request_id: str
    customer_id: int
    features: dict[str, Any]  # exactly as sent to the model
    probability: float
    label: int
    threshold: float
    model_version: str
    snapshot_run_id: str
    snapshot_as_of: str  # ISO date
    latency_ms: float  # from the request's arrival to the answer
    reasons: list[dict[str, Any]] | None = None  # explained answers only (features.reasons.reasons_for); NULL otherwise

    def row(self) -> tuple[Any, ...]:
        """The entry as a table row, in COLUMNS order (features and reasons as JSON text)."""
        return (
            self.ts,
            self.request_id,
            self.customer_id,
            json.dumps(self.features),
            self.probability,
            self.label,
            self.threshold,
            self.model_version,
            self.snapshot_run_id,
            self.snapshot_as_of,
            self.latency_ms,
            None if self.reasons is None else json.dumps(self.reasons),
        )


COLUMNS: tuple[str, ...] = (
    "ts",
    "request_id",
    "customer_id",
    "features",
    "probability",
    "label",
    "threshold",
    "model_version",
    "snapshot_run_id",
    "snapshot_as_of",
    "latency_ms",
    "reasons",
)


class PredictionLog(abc.ABC):
    kind = "abstract"

    @abc.abstractmethod
    def write_batch(self, entries: Sequence[LogEntry]) -> None:
        """Append entries in one transaction (all or none); LogUnavailable on failure."""

    @abc.abstractmethod
    def recent(self, limit: int = 100) -> list[LogEntry]:
        """The last `limit` entries, oldest first (in write order)."""

    @abc.abstractmethod
    def count(self) -> int: ...

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise LogUnavailable unless the database answers."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Drop the table (tests)."""

    def close(self) -> None:
        pass

    @abc.abstractmethod
    def describe(self) -> str: ...
