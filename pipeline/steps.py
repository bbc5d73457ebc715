"""The lifecycle steps, each once: a plain function, typed inputs and outputs, no knowledge of its caller.

Every output is a frozen dataclass of JSON values (the run record keeps it) with an
`outcome` sentence, which is what `python -m pipeline` prints for the step. A step that
cannot do its work raises UserError with one line; nothing a reader uses changes before a
step's last action (the feature job publishes its snapshot last; a challenger is only
registered, never promoted, by `train`; `promote` moves the alias in one call).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from configuration.files import sha256_file
from configuration.settings import Settings


def _logs(settings: Settings) -> Path:
    return Path(settings.paths.state_dir) / "pipeline" / "logs"


def _annotate(registry, version: str, **values: Any) -> None:
    """Record lineage and gate figures with a model version where the registry can keep them (MLflow)."""
    annotate = getattr(registry, "annotate", None)
    if annotate is not None:
        annotate(version, **values)


# --- ingest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingested:
    uri: str  # as given: a local path or s3:// URI
    path: str  # the local file the feature job reads
    sha256: str
    size_bytes: int
    truth_path: str | None  # the generator's <csv>.truth.parquet beside it, when there is one
    outcome: str


def _truth_beside(csv: Path) -> Path:
    from features.sample_data import truth_path

    return truth_path(csv)


def ingest(settings: Settings, input_uri: str) -> Ingested:
    """The raw CSV from a local path or s3:// (downloaded with boto3), recorded by sha256."""
    if input_uri.startswith("s3://"):
        return _ingest_s3(settings, input_uri)
    path = Path(input_uri.removeprefix("file://")).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"input {input_uri} is not a file: give the raw loans CSV (a local path or s3://bucket/key)")
    truth = _truth_beside(path)
    sha = sha256_file(path)
    return Ingested(
        uri=str(path),
        path=str(path),
        sha256=sha,
        size_bytes=path.stat().st_size,
        truth_path=str(truth) if truth.is_file() else None,
        outcome=f"{path.name}: {path.stat().st_size / 1e6:,.1f} MB, sha256 {sha[:12]}",
    )


def _ingest_s3(settings: Settings, uri: str) -> Ingested:
    """Download into <state_dir>/pipeline/inputs/<sha256>/NAME (content-addressed: a rerun finds it there)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from training.aws import download_object, explain, session, split_s3

    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        raise UserError(f"input {uri} names no object: give s3://bucket/path/to/loans.csv")
    name = key.rsplit("/", 1)[-1]
    inputs = Path(settings.paths.state_dir) / "pipeline" / "inputs"
    s3 = session(settings).client("s3")
    staging = inputs / f".download-{time.time_ns()}"
    try:
        download_object(s3, uri, staging / name)
        sha = sha256_file(staging / name)
        truth_key = (key[:-4] if key.endswith(".csv") else key) + ".truth.parquet"
        truth_name = truth_key.rsplit("/", 1)[-1]
        try:
            s3.download_file(bucket, truth_key, str(staging / truth_name))
        except (ClientError, BotoCoreError):
            pass  # no truth file beside it: the usual case for real data
        target = inputs / sha
        if not (target / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            for produced in sorted(
                staging.iterdir(), key=lambda p: p.name == name
            ):  # the CSV last: it marks completion
                produced.replace(target / produced.name)
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, f"download {uri}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    csv = target / name
    truth = _truth_beside(csv)
    return Ingested(
        uri=uri,
        path=str(csv),
        sha256=sha,
        size_bytes=csv.stat().st_size,
        truth_path=str(truth) if truth.is_file() else None,
        outcome=f"{uri} downloaded to {csv}: {csv.stat().st_size / 1e6:,.1f} MB, sha256 {sha[:12]}",
    )


# --- features -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    run_id: str
    as_of: str
    training_uri: str
    latest_uri: str
    rows: int
    computed: bool  # False: the current snapshot was reused
    outcome: str


def _snapshot(manifest: dict, computed: bool, outcome: str) -> Snapshot:
    outputs = manifest["outputs"]
    return Snapshot(
        run_id=manifest["run_id"],
        as_of=manifest["as_of"],
        training_uri=outputs["training"]["uri"],
        latest_uri=outputs["latest"]["uri"],
        rows=int(outputs["training"]["rows"]),
        computed=computed,
        outcome=outcome,
    )


def current_snapshot_for(settings: Settings, sha256: str, as_of: dt.date) -> dict | None:
    """The current snapshot's manifest when it was computed from this input (sha256) for this as_of, else None."""
    from features import lake

    if lake.read_current(settings) is None:
        return None
    manifest = lake.read_manifest(settings)
    same = manifest.get("input", {}).get("sha256") == sha256 and manifest.get("as_of") == as_of.isoformat()
    return manifest if same else None


def features(settings: Settings, ingested: Ingested, as_of: dt.date, force: bool = False, spark=None) -> Snapshot:
    """The feature job, unless the current snapshot came from the same sha256 and as_of (or `force`).

    The job runs in a process of its own (its JVM holds an embedded metastore only while it
    runs), or in `spark` when the caller has a session already (the tests' shared one).
    """
    from features import lake

    current = None if force else current_snapshot_for(settings, ingested.sha256, as_of)
    if current is not None:
        return _snapshot(
            current,
            False,
            f"snapshot {current['run_id']} is current for sha256 {ingested.sha256[:12]} "
            f"as of {as_of}: skipped (--force recomputes it)",
        )
    started = time.perf_counter()
    if spark is not None:
        from features import job

        job.run(spark, settings, job.JobParams(input_uri=ingested.path, as_of=as_of))
    else:
        _run_child(
            settings,
            ["features", "--input", ingested.path, "--as-of", as_of.isoformat()],
            "features",
            "the feature job",
            SPARKMAKER_FEATURES__MATERIALIZE="false",
        )  # the materialize step does it
    seconds = time.perf_counter() - started
    manifest = lake.read_manifest(settings)
    if manifest.get("input", {}).get("sha256") != ingested.sha256:
        raise UserError(
            f"the feature job finished but the current snapshot {manifest['run_id']} was not made from "
            f"{ingested.uri}: another run published meanwhile; run the step again"
        )
    rows = manifest["outputs"]["training"]["rows"]
    return _snapshot(
        manifest,
        True,
        f"snapshot {manifest['run_id']} published: {rows:,} training rows, as of {as_of} ({seconds:.0f} s)",
    )


def _run_child(settings: Settings, args: list[str], log_name: str, what: str, **env: str) -> float:
    from pipeline.child import run_module

    return run_module(settings, args, _logs(settings) / f"{log_name}.log", what, **env)


# --- materialize --------------------------------------------------------------------------


@dataclass(frozen=True)
class Materialized:
    run_id: str
    customers: int | None
    loaded: bool  # False: the store already held this snapshot
    outcome: str


def materialize(settings: Settings, snapshot: Snapshot) -> Materialized:
    """The online store brought to the snapshot, unless it holds it already."""
    from features.online import open_store

    store = open_store(settings)
    try:
        online = store.current_snapshot()
        where = store.describe()
    finally:
        store.close()
    if online is not None and online.run_id == snapshot.run_id:
        return Materialized(
            snapshot.run_id, online.rows, False, f"online store holds snapshot {snapshot.run_id} ({where})"
        )
    if settings.lake_is_local:
        from features.online.materialize import materialize as load

        result = load(settings, snapshot.run_id)
        rows, seconds = result.snapshot.rows, result.seconds
    else:  # a remote lake is read by Spark, in a process of its own
        seconds = _run_child(
            settings,
            ["features", "materialize", "--snapshot", snapshot.run_id],
            "materialize",
            "materializing the online store",
        )
        rows = None
    return Materialized(
        snapshot.run_id,
        rows,
        True,
        f"online store loaded with snapshot {snapshot.run_id}"
        + (f": {rows:,} customers" if rows is not None else "")
        + f" in {seconds:.1f} s ({where})",
    )


# --- drift --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    alert: bool
    reason: str
    checked: bool  # False: monitoring is not installed
    outcome: str


def drift(settings: Settings, snapshot: Snapshot) -> Drift:
    """The monitoring package's verdict on the snapshot (an alert asks for retraining), when it is installed."""
    try:
        from monitoring import drift_step
    except ImportError:
        return Drift(False, "skipped: monitoring not installed", False, "skipped: monitoring not installed")
    result = drift_step(settings, snapshot.run_id)
    alert, reason = bool(result.alert), str(result.reason)
    return Drift(alert, reason, True, ("alert: " if alert else "no alert: ") + reason)


# --- train --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    version: str | None  # the challenger; None when training was skipped
    champion: str | None  # production when the challenger was trained
    reason: str  # why it trained, or why not
    snapshot: str
    window: dict[str, str] | None  # the gate's window; the challenger was not fitted on it
    outcome: str


def retrain_reason(
    settings: Settings, snapshot: Snapshot, drift_outcome: Drift, force: bool
) -> tuple[str | None, str | None]:
    """(why to train, production version): the one place deciding whether a challenger is trained."""
    from training.registry import open_registry

    registry = open_registry(settings)
    production = registry.alias()
    if force:
        return "--force", production
    if production is None:
        return "no model in production", None
    if drift_outcome.alert:
        return f"drift: {drift_outcome.reason}", production
    trained_on = registry.get(production).run_id
    if trained_on != snapshot.run_id:
        return f"new snapshot (production v{production} was trained on {trained_on or 'unknown data'})", production
    return None, production


def gate_window(settings: Settings, snapshot: Snapshot, champion: str | None):
    """The gate's window on this snapshot for this champion (pipeline.gate)."""
    from pipeline import gate
    from training.registry import open_registry

    frame = gate.read_rows(snapshot.training_uri)
    end = gate.champion_data_end(open_registry(settings).metadata(champion)) if champion else None
    g = settings.pipeline.gate
    return frame, gate.window_for(gate.loan_dates(frame), g.window_fraction, end, g.window_from)


def train(
    settings: Settings,
    ingested: Ingested,
    snapshot: Snapshot,
    drift_outcome: Drift,
    force: bool = False,
    run_key: str = "",
) -> Trained:
    """A challenger trained on the snapshot through the training contract (`training local`), registered, not promoted."""
    from dataclasses import asdict

    import numpy as np

    from training import local
    from training.registry import open_registry

    reason, production = retrain_reason(settings, snapshot, drift_outcome, force)
    if reason is None:
        why = f"skipped: production v{production} was trained on this snapshot"
        return Trained(None, production, why, snapshot.run_id, None, why)
    frame, window = gate_window(settings, snapshot, production)
    later = int((frame.loan_date >= np.datetime64(window.start, "D")).sum())
    hps = {"split_date": window.start} if 0 < later < len(frame) else {}  # else the default split; the gate will refuse
    registry = open_registry(settings)
    source = local.Source(uri=snapshot.training_uri, run_id=snapshot.run_id)
    started = time.perf_counter()
    from pipeline.child import output_to

    log = _logs(settings) / "train.log"
    try:
        with output_to(log):
            result = local.train_local(
                settings, registry, source, None, ingested.truth_path, hps, promote=False, promote_first=False
            )
    except UserError as exc:
        raise UserError(f"{exc} (log: {log})") from None
    _annotate(
        registry,
        result.version,
        tags={
            "pipeline.run_key": run_key,
            "pipeline.retrain_reason": reason,
            "input.uri": ingested.uri,
            "input.sha256": ingested.sha256,
            "snapshot.run_id": snapshot.run_id,
            "snapshot.as_of": snapshot.as_of,
        },
    )
    auc = (result.metadata.get("metrics") or {}).get("roc_auc")
    return Trained(
        result.version,
        production,
        reason,
        snapshot.run_id,
        asdict(window),
        f"challenger v{result.version} trained on snapshot {snapshot.run_id} in "
        f"{time.perf_counter() - started:.0f} s (validation AUC {auc:.4f}; reason: {reason})",
    )


# --- evaluate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    promote: bool
    reason: str
    skipped: bool
    decision: dict[str, Any] | None  # pipeline.gate.Decision as a dict: both models' figures on the same rows
    outcome: str


def evaluate(settings: Settings, snapshot: Snapshot, trained: Trained, force: bool = False) -> Evaluation:
    """The gate: challenger against champion on the same recent rows of the snapshot."""
    from dataclasses import asdict

    from pipeline import gate
    from training.registry import open_registry

    if trained.version is None:
        return Evaluation(False, trained.reason, True, None, "skipped: no challenger")
    registry = open_registry(settings)
    frame, window = gate_window(settings, snapshot, trained.champion)
    if trained.window is not None:
        window = gate.Window(**trained.window)  # the window the challenger was held out from
    champion = (trained.champion, registry.model_dir(trained.champion)) if trained.champion else None
    decision = gate.judge(
        frame, window, (trained.version, registry.model_dir(trained.version)), champion, settings.pipeline.gate, force
    )
    figures = {}
    for who in ("challenger", "champion"):
        for name, value in (getattr(decision, who) or {}).items():
            if name != "version":
                figures[f"gate.{who}.{name}"] = value
    figures.update({"gate.rows": decision.rows, "gate.positives": decision.positives})
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sparkmaker-gate-") as tmp:
        record = Path(tmp) / "gate-decision.json"
        record.write_text(json.dumps(asdict(decision), indent=2) + "\n", encoding="utf-8")
        _annotate(
            registry,
            trained.version,
            tags={
                "gate.decision": "promote" if decision.promote else "refuse",
                "gate.reason": decision.reason[:5000],
                "gate.champion": trained.champion or "",
            },
            metrics={k: float(v) for k, v in figures.items()},
            artifacts={"gate-decision.json": record},
        )
    return Evaluation(decision.promote, decision.reason, False, asdict(decision), decision.reason)


# --- promote ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    production: str | None  # after this step
    previous: str | None
    promoted: bool
    outcome: str


def promote(settings: Settings, trained: Trained, evaluation: Evaluation) -> Promotion:
    """Move the production alias to the challenger when the gate said so; otherwise leave it."""
    from training.registry import open_registry

    registry = open_registry(settings)
    production = registry.alias()
    if trained.version is None or not evaluation.promote:
        what = "no challenger" if trained.version is None else "the gate refused the challenger"
        return Promotion(
            production,
            production,
            False,
            f"production stays v{production} ({what})" if production else f"no model in production ({what})",
        )
    if production == trained.version:
        return Promotion(production, trained.champion, True, f"v{production} is production")
    if production != trained.champion:
        raise UserError(
            f"production moved from v{trained.champion} to v{production} since the challenger was judged: "
            "run the train step again to judge against the new champion"
        )
    registry.promote(trained.version)
    return Promotion(
        trained.version,
        production,
        True,
        f"v{trained.version} is production (was v{production})"
        if production
        else f"v{trained.version} is production (the first model)",
    )


# --- deploy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    target: str  # local or sagemaker
    version: str | None
    serving: str | None  # the version the target answers with, when it could be asked
    outcome: str


def served_version(settings: Settings, feature_count: int) -> str | None:
    """The version the local model server answers with (X-Model-Version), or None when it is not up."""
    import httpx

    url = f"http://{settings.serving.host}:{settings.serving.port}"
    try:
        if httpx.get(f"{url}/ping", timeout=2.0).status_code != 200:
            return None
        response = httpx.post(
            f"{url}/invocations",
            content=",".join(["0"] * feature_count) + "\n",
            headers={"Content-Type": "text/csv"},
            timeout=5.0,
        )
        return response.headers.get("X-Model-Version") if response.status_code == 200 else None
    except httpx.HTTPError:
        return None


def deploy(settings: Settings, promotion: Promotion, wait_seconds: float = 60.0) -> Deployment:
    """Put production where it is served: the local model server (which follows the alias) or a SageMaker endpoint."""
    version = promotion.production
    if version is None:
        return Deployment(settings.serving.target, None, None, "nothing to deploy: no model in production")
    if settings.serving.target == "sagemaker":
        from serving.deploy import deploy as deploy_endpoint

        result = deploy_endpoint(settings, version=version)
        name = result.get("endpoint_name", settings.serving.endpoint_name)
        return Deployment(
            "sagemaker", version, version, f"endpoint {name} serves v{version} ({result.get('status', 'updated')})"
        )
    from features.contract import FEATURE_COLUMNS

    deadline = time.monotonic() + wait_seconds
    serving = served_version(settings, len(FEATURE_COLUMNS))
    if serving is None:
        return Deployment(
            "local", version, None, f"the local model server is not running: it loads v{version} when it starts"
        )
    while serving != version and time.monotonic() < deadline:
        time.sleep(0.5)  # it checks the alias every serving.watch_interval_seconds
        serving = served_version(settings, len(FEATURE_COLUMNS))
    if serving != version:
        raise UserError(
            f"the local model server still answers with {serving} {wait_seconds:.0f} s after v{version} "
            "became production: read its log (.state/logs/model-server.log)"
        )
    return Deployment("local", version, serving, f"the local model server answers with v{version}")


# --- batch-score --------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchScores:
    version: str
    output_uri: str
    outcome: str


def batch_score(settings: Settings, snapshot: Snapshot, promotion: Promotion) -> BatchScores:
    """The snapshot's latest table scored by the production model (`serving batch`), into its Hive table."""
    from serving.batch import default_output

    if promotion.production is None:
        raise UserError("nothing to score with: no model in production")
    output = default_output(settings, snapshot.run_id, promotion.production)
    seconds = _run_child(
        settings,
        [
            "serving",
            "batch",
            "--input",
            snapshot.latest_uri,
            "--output",
            output,
            "--model-version",
            promotion.production,
        ],
        "batch-score",
        "batch scoring",
    )
    return BatchScores(
        promotion.production,
        output,
        f"latest table scored by v{promotion.production} into "
        f"{settings.features.database}.{settings.serving.batch_table} ({seconds:.0f} s)",
    )
