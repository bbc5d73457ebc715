"""The drift step of the lifecycle: measure a snapshot, store the results, say whether to retrain.

    drift_step(settings, run_id) -> DriftOutcome

1. feature drift, both comparisons (monitoring.feature_drift);
2. prediction drift of the production model over the recent window (monitoring.prediction_drift);
3. realized quality per model version, from the prediction log and this snapshot's loans
   (monitoring.realized);
4. Parquet under the snapshot, the Hive tables (monitoring.store), then latest.json
   (monitoring.figures), the last act, so /metrics never shows half a run.

`alert` is true when any feature of either comparison is at alert level, or the production
model's realized ROC-AUC is below `monitoring.min_realized_auc`; `reason` says which, in one
line. Missing pieces (no production model, no previous snapshot, an empty prediction log,
too few rows) are statuses with a note, never an exception and never a made-up number.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import pandas as pd

from api.prediction_log.base import LogUnavailable
from api.prediction_log.reader import iso_utc, open_prediction_reader
from configuration.errors import UserError
from configuration.settings import Settings
from features import lake
from features.contract import FEATURE_COLUMNS
from monitoring import feature_drift, figures, prediction_drift, realized, store

UNAVAILABLE = "log_unavailable"


@dataclass(frozen=True)
class DriftOutcome:
    run_id: str
    alert: bool
    reason: str  # one line: why it alerts, or "no alert"
    summary: str  # one line: every figure that matters
    drift: tuple[dict, ...] = field(default=(), repr=False)
    prediction: dict = field(default_factory=dict, repr=False)
    quality: tuple[dict, ...] = field(default=(), repr=False)
    problems: tuple[str, ...] = ()  # what could not be measured, one line each
    tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class Production:
    version: str | None
    run_id: str | None
    threshold: float | None
    scores: pd.DataFrame | None
    why_not: str  # empty when there is a production model with validation scores


def production_model(settings: Settings) -> Production:
    from training import artifact
    from training.registry import open_registry

    registry = open_registry(settings)
    version = registry.alias("production")
    if version is None:
        return Production(
            None, None, None, None, "no production model: train and promote one (python -m training train --promote)"
        )
    entry = registry.get(version)
    model_dir = registry.model_dir(version)
    threshold = registry.metadata(version).get("threshold")
    path = model_dir / artifact.VALIDATION_SCORES_FILE
    if not path.is_file():
        return Production(
            version,
            entry.run_id,
            threshold,
            None,
            f"model {version} has no {artifact.VALIDATION_SCORES_FILE} (trained before it was stored): retrain it",
        )
    import pyarrow.parquet as pq

    return Production(version, entry.run_id, threshold, pq.read_table(path).to_pandas(), "")


def previous_snapshot(settings: Settings, run_id: str) -> str | None:
    """The newest complete snapshot older than run_id (run ids start with their UTC time), on a local lake."""
    from features.retention import list_snapshots

    if not lake.is_local(lake.dataset_uri(settings)):
        return None
    older = [s.run_id for s in list_snapshots(settings) if s.complete and s.run_id < run_id]
    return older[0] if older else None


def _table(settings: Settings, run_id: str, name: str, columns: list[str], spark=None) -> pd.DataFrame:
    manifest = lake.read_manifest(settings, run_id, spark)
    return store.read_columns(settings, manifest["outputs"][name]["uri"], columns, spark)


def measure_features(settings: Settings, run_id: str, production: Production, spark=None) -> list[dict]:
    mon = settings.monitoring
    features = list(FEATURE_COLUMNS)
    rows: list[dict] = []

    current = feature_drift.recent_training_rows(
        _table(settings, run_id, "training", ["loan_date", *features], spark), mon.recent_days
    )
    reference, why = None, production.why_not if production.version is None else ""
    if production.version is not None:
        try:
            reference = (
                feature_drift.recent_training_rows(
                    _table(settings, production.run_id, "training", ["loan_date", *features], spark), mon.recent_days
                )
                if production.run_id
                else None
            )
            why = (
                ""
                if production.run_id
                else f"model {production.version} does not record the snapshot it was trained on"
            )
        except UserError as exc:
            why = f"the snapshot {production.run_id} of model {production.version} cannot be read: {exc}"
    for row in feature_drift.compare(reference, current, mon, why):
        rows.append(
            {**row, "comparison": "training", "reference_run_id": production.run_id if reference is not None else None}
        )

    previous = previous_snapshot(settings, run_id)
    current = _table(settings, run_id, "latest", features, spark)
    reference = _table(settings, previous, "latest", features, spark) if previous else None
    why = "" if previous else "no previous snapshot to compare the latest table with"
    for row in feature_drift.compare(reference, current, mon, why):
        rows.append({**row, "comparison": "latest", "reference_run_id": previous})
    return rows


def measure_predictions(settings: Settings, run_id: str, production: Production, now: dt.datetime, spark=None):
    """(prediction-drift row, realized-quality rows, problems)."""
    mon = settings.monitoring
    start = now - dt.timedelta(hours=mon.prediction_window_hours)
    window = {"window_start": iso_utc(start), "window_end": iso_utc(now)}
    reader = open_prediction_reader(settings)
    problems: list[str] = []
    try:
        served = reader.served()
    except LogUnavailable as exc:
        note = f"cannot read the prediction log: {exc}"
        return ({"model_version": production.version, "status": UNAVAILABLE, "note": note, **window}, [], [note])
    recent = served[served["ts"] >= window["window_start"]]
    why = production.why_not
    row = prediction_drift.compare(recent, production.scores, production.version, production.threshold, mon, why)
    row.update(window)
    if row["status"] not in (prediction_drift.OK, prediction_drift.WARN, prediction_drift.ALERT):
        problems.append(f"prediction drift: {row['note']}")
    if served.empty:
        problems.append(
            f"the prediction log is empty ({reader.describe()}): no prediction drift, no realized quality yet"
        )
        return row, [], problems
    loans = _table(settings, run_id, "training", ["id", "loan_id", "loan_date", "status"], spark)
    quality = realized.quality(served, loans, mon)
    problems += [q["note"] for q in quality if q["status"] != realized.OK]
    return row, quality, problems


def verdict(
    drift: list[dict], quality: list[dict], production_version: str | None, settings: Settings
) -> tuple[bool, str]:
    """(alert, reason): alert-level drift on any feature, or the production model's realized AUC under the floor."""
    alerts = [r for r in drift if r["status"] == feature_drift.ALERT]
    parts = []
    if alerts:
        by_feature: dict[str, list[str]] = {}
        for r in alerts:
            what = f"PSI {r['psi']:.2f}" if _number(r["psi"]) is not None else "all missing"
            by_feature.setdefault(r["feature"], []).append(f"{what} ({r['comparison']})")
        parts.append("drift alert: " + ", ".join(f"{f} {' / '.join(v)}" for f, v in by_feature.items()))
    floor = settings.monitoring.min_realized_auc
    for q in quality:
        auc = _number(q["roc_auc"])
        if q["model_version"] == production_version and auc is not None and auc < floor:
            parts.append(
                f"realized ROC-AUC {auc:.3f} of model {q['model_version']} below {floor:g} "
                f"({q['matched_predictions']:,} matched)"
            )
    return bool(parts), "; ".join(parts) or "no alert"


def drift_problems(drift: list[dict]) -> list[str]:
    return [f"{r['comparison']} {r['feature']}: {r['note']}" for r in drift if r["note"]]


def _number(value) -> float | None:
    return None if value is None or math.isnan(value) else float(value)  # NaN (from a stored row) is no number


def summarize(run_id: str, drift: list[dict], prediction: dict, quality: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in drift:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    text = f"snapshot {run_id}: feature drift " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    if _number(prediction.get("psi")) is not None:
        text += (
            f"; prediction PSI {prediction['psi']:.3f} ({prediction['status']}, {prediction['served_rows']:,} served)"
        )
    else:
        text += f"; prediction drift {prediction.get('status')}"
    for q in quality:
        auc = f"AUC {q['roc_auc']:.3f}" if _number(q["roc_auc"]) is not None else q["status"]
        text += f"; model {q['model_version']} realized {auc} on {q['matched_predictions']:,} matched"
    return text


def drift_step(settings: Settings, run_id: str, spark=None, now: dt.datetime | None = None) -> DriftOutcome:
    """Measure snapshot `run_id`, store the results, and say whether the lifecycle should retrain."""
    now = now or dt.datetime.now(dt.UTC)
    computed_at = iso_utc(now)
    lake.read_manifest(settings, run_id, spark)  # a one-line UserError for an unknown snapshot, before any work
    production = production_model(settings)
    drift = measure_features(settings, run_id, production, spark)
    prediction, quality, problems = measure_predictions(settings, run_id, production, now, spark)
    problems = drift_problems(drift) + problems
    for rows in (drift, [prediction], quality):
        for r in rows:
            r.update(snapshot_run_id=run_id, computed_at=computed_at)

    if not lake.is_local(lake.snapshot_uri(settings, run_id)) and spark is None:
        from features.session import build_session

        spark = build_session(settings, "sparkmaker-monitoring")
    store.write_results(settings, run_id, "drift", drift, spark)
    store.write_results(settings, run_id, "prediction_drift", [prediction], spark)
    store.write_results(settings, run_id, "realized_quality", quality, spark)
    tables: list[str] = []
    if settings.monitoring.register_hive:
        tables = register_tables(settings, run_id, spark)

    alert, reason = verdict(drift, quality, production.version, settings)
    summary = summarize(run_id, drift, prediction, quality)
    figures.write_latest(
        settings,
        {
            "snapshot_run_id": run_id,
            "computed_at": computed_at,
            "alert": alert,
            "reason": reason,
            "summary": summary,
            "production_version": production.version,
            "problems": problems,
            "drift": [{k: v for k, v in r.items() if k != "bins_json"} for r in drift],
            "prediction": {k: v for k, v in prediction.items() if k != "bins_json"},
            "quality": [{k: v for k, v in q.items() if k != "calibration_json"} for q in quality],
        },
        spark,
    )
    return DriftOutcome(
        run_id, alert, reason, summary, tuple(drift), prediction, tuple(quality), tuple(problems), tuple(tables)
    )


def register_tables(settings: Settings, run_id: str, spark=None) -> list[str]:
    from features.session import build_session, explain_metastore_error

    try:
        spark = spark or build_session(settings, "sparkmaker-monitoring")
        return store.register(spark, settings, run_id)
    except UserError:
        raise
    except Exception as exc:
        explained = explain_metastore_error(exc, settings)
        if explained is not None:
            raise explained from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot register the monitoring tables in {settings.features.database}: {first[:300]}"
        ) from None
