"""The prediction itself: features from the online store, one model call, labels, log entries.

Routes stay thin; this module holds what a prediction is, apart from HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.errors import ApiError
from api.model_endpoint import Explanation, ModelAnswer, ModelFailed, RegistryThresholds
from api.observability import current_request_id, elapsed_ms
from api.prediction_log import LogEntry, LogWriter
from configuration.settings import Settings
from features.contract import FEATURE_COLUMNS
from features.online.base import FeatureRecord, OnlineStore
from features.reasons import reasons_for

if TYPE_CHECKING:
    from api.deps import Services


@dataclass(frozen=True, slots=True)
class Scored:
    record: FeatureRecord
    probability: float
    label: int
    explanation: Explanation | None = None
    reasons: list[dict] | None = None  # features.reasons.reasons_for, when explained


@dataclass(frozen=True, slots=True)
class Scoring:
    scored: list[Scored]
    not_found: list[int]
    model_version: str | None
    threshold: float | None


def label_of(probability: float, threshold: float) -> int:
    """1 (bad loan) when the probability reaches the model's threshold, as training chose it."""
    return int(probability >= threshold)


async def no_snapshot_error(store: OnlineStore) -> ApiError | None:
    if await store.current_snapshot_async() is None:
        return ApiError(
            503,
            "no feature snapshot is in the online store yet: run the feature job, or python -m features materialize",
            {"Retry-After": "60"},
        )
    return None


def not_found_message(customer_id: int) -> str:
    """What the API (404) and the console say of an id the current snapshot lacks."""
    return (
        f"customer {customer_id} is not in the current feature snapshot: check the id "
        "(customers without a loan before the snapshot's date are absent)"
    )


def _threshold(answer: ModelAnswer, thresholds: RegistryThresholds) -> tuple[str, float]:
    if answer.threshold is not None:
        return answer.model_version, answer.threshold
    fallback = thresholds.lookup()
    if fallback is None:
        raise ModelFailed(
            f"the model endpoint ({answer.model_version}) reported no threshold and the registry has no production model to take it from"
        )
    version = answer.model_version if answer.model_version not in ("unknown", "AllTraffic") else fallback[0]
    return version, fallback[1]


async def score(ids: Sequence[int], services: "Services", explain: bool = False) -> Scoring:
    """Read every id from one snapshot, score the ones found in one model call (explained: with TreeSHAP and reasons)."""
    metrics = services.metrics
    records = await services.store.online_read_async(ids)
    found = [r for r in records if r is not None]
    not_found = [i for i, r in zip(ids, records) if r is None]
    if not found:
        return Scoring([], not_found, None, None)
    rows = [[r.features[name] for name in FEATURE_COLUMNS] for r in found]
    started = time.perf_counter()
    try:
        answer = await (services.model.predict(rows, explain=True) if explain else services.model.predict(rows))
    finally:
        metrics.model_latency.observe(time.perf_counter() - started)
    version, threshold = _threshold(answer, services.thresholds)
    metrics.saw_model(version)
    metrics.saw_snapshot(found[0].run_id, found[0].as_of)
    metrics.predictions.inc(len(found))
    if answer.explanations is None:
        scored = [Scored(r, p, label_of(p, threshold)) for r, p in zip(found, answer.probabilities)]
    else:
        scored = [
            Scored(r, p, label_of(p, threshold), e, reasons_for(r.features, e.contributions))
            for r, p, e in zip(found, answer.probabilities, answer.explanations)
        ]
    return Scoring(scored, not_found, version, threshold)


def item(s: Scored, scoring: Scoring) -> dict:
    return {
        "id": s.record.id,
        "probability": s.probability,
        "label": s.label,
        "threshold": scoring.threshold,
        "model_version": scoring.model_version,
        "features": s.record.features,
        "feature_snapshot": {"run_id": s.record.run_id, "as_of": s.record.as_of},
        **(explained(s.explanation, s.reasons) if s.explanation is not None else {}),
    }


def explained(explanation: Explanation, reasons: list[dict] | None) -> dict:
    """The `explanation` and `reasons` fields of an explained answer (api.schemas.Explanation, Reason)."""
    return {
        "explanation": {
            "base_value": explanation.base_value,
            "contributions": {name: explanation.contributions[name] for name in FEATURE_COLUMNS},
            "scale": "log_odds",
        },
        "reasons": reasons or [],
    }


class _UtcClock:
    """Now as `2026-01-31T12:00:00.123456Z`, what datetime's strftime gives, with the seconds formatted once a second."""

    _cached = (-1, "")  # one tuple, replaced whole: a thread never sees one second's number with another's text

    def now(self) -> str:
        now = time.time()
        second = int(now)
        cached_second, text = self._cached
        if second != cached_second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, text)
        return f"{text}.{int((now - second) * 1_000_000):06d}Z"


utc_now_text = _UtcClock().now


def log_scoring(writer: LogWriter, scoring: Scoring) -> None:
    """Queue one log entry per scored id (never blocks, never raises)."""
    ts = utc_now_text()
    request_id = current_request_id()
    latency = round(elapsed_ms(), 3)
    threshold, model_version = scoring.threshold, scoring.model_version
    if threshold is None or model_version is None:  # set whenever something was scored
        return
    for s in scoring.scored:
        writer.submit(
            LogEntry(
                ts=ts,
                request_id=request_id,
                customer_id=s.record.id,
                features=s.record.features,
                probability=s.probability,
                label=s.label,
                threshold=threshold,
                model_version=model_version,
                snapshot_run_id=s.record.run_id,
                snapshot_as_of=s.record.as_of,
                latency_ms=latency,
                reasons=s.reasons,
            )
        )


def settings_summary(settings: Settings) -> str:
    return f"store {settings.online_store.kind}, model {settings.api.model_endpoint}, log {settings.api.prediction_log}"
