"""The feature job: raw CSV -> validated, point-in-time features, published as one new snapshot.

Stages (each logged with its time):
  1. check   connectors for the input and the lake, the input's size and sha256, its header
  2. classify  read every row once, validate it, resolve duplicate loan ids -> staged Parquet
  3. count   rows in / accepted / rejected per reason; refuse the run over the reject limit
  4. write   training, latest and rejects Parquet under snapshots/<run_id>/
  5. publish manifest, Hive tables repointed, CURRENT switched (the one step readers notice)

Nothing a reader uses changes before stage 5; a failure before it deletes the new snapshot
folder and leaves the previous snapshot current. A run killed outright leaves at most an
orphan snapshot folder that no pointer names.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, Observation, SparkSession

from configuration.errors import UserError
from configuration.settings import REPO_ROOT, Settings
from features import hive, lake, read, session, transform, validate
from features.input_check import InputCheck
from features.contract import REJECT_REASONS
from features.progress import Progress

TABLES = {"training": "training_features", "latest": "latest_features", "rejects": "rejects"}


@dataclass(frozen=True)
class JobParams:
    input_uri: str
    as_of: dt.date
    manifest_path: Path | None = None
    # Started before the SparkSession (cli): the input's header checked and its sha256 under way.
    # None: the check stage starts it.
    input_check: InputCheck | None = None


def new_run_id(now: dt.datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(spark: SparkSession, settings: Settings, params: JobParams, progress: Progress | None = None) -> dict:
    """Run the whole job; return the manifest of the new, now current, snapshot.

    One run at a time per dataset on a local lake (lake.exclusive): a second one stops at
    once with a one-line error naming the first.
    """
    with lake.exclusive(settings, "a feature run"):
        return _run(spark, settings, params, progress)


def _run(spark: SparkSession, settings: Settings, params: JobParams, progress: Progress | None) -> dict:
    progress = progress or Progress("features")
    started = dt.datetime.now(dt.timezone.utc)
    run_id = new_run_id(started)
    snapshot = lake.snapshot_uri(settings, run_id)
    store = lake.lake_for(snapshot, spark)
    previous = lake.read_current(settings, spark)
    tables = {name: f"{settings.features.database}.{table}" for name, table in TABLES.items()}
    warmup = hive.Warmup(spark, settings.features.database, tables.values())
    published = False
    try:
        with progress.stage("check") as note:
            spark.sparkContext.setJobGroup(run_id, f"features {run_id}")
            session.require_filesystem(spark, params.input_uri)
            session.require_filesystem(spark, settings.paths.lake)
            check = params.input_check or InputCheck(params.input_uri)
            input_meta, columns = check.result(spark)
            note(f"{input_meta['size_bytes'] / 1e6:.1f} MB, {len(columns)} columns, run {run_id}, as of {params.as_of}")

        warmup.check()
        staged_uri = lake.join(snapshot, "classified.staging")
        with progress.stage("classify") as note:
            raw = read.read_raw(spark, params.input_uri, columns)
            # The row-level counts ride on the staging write: no pass over the rows of their own.
            observed = Observation()
            checked = validate.row_checked(raw).observe(observed, *validate.row_level_counts())
            # No dictionary encoding for this temporary copy: building the dictionaries of its 24 raw
            # string columns was a seventh of the stage's CPU (a JFR profile: Parquet's dictionary map
            # and Binary.equals). The later stages read plain pages a little slower (no lazy decoding),
            # by far less than that (benchmarks/README.md, Features, 2026-12-07 afternoon).
            checked.write.mode("errorifexists").option("parquet.enable.dictionary", "false").parquet(staged_uri)
            row_counts = observed.get
            staged = spark.read.parquet(staged_uri)
            # Small (repeated loan ids only) and used by every later stage: computed once.
            verdicts = validate.duplicate_verdicts(staged, columns).cache()
            classified = validate.apply_duplicate_verdicts(staged, verdicts)

        warmup.check()
        with progress.stage("count") as note:
            counts = manifest_counts(row_counts, *validate.duplicate_counts(verdicts))
            note(
                f"{counts['rows_in']:,} rows read, {counts['rows_accepted']:,} accepted, "
                f"{sum(counts['rejects'].values()):,} rejected "
                + (", ".join(f"{r} {n:,}" for r, n in counts["rejects"].items() if n) or "")
                + f", {counts['exact_duplicates_removed']:,} exact copies dropped"
                + (
                    f"; {counts['undecodable_rows']:,} rows hold bytes that are not UTF-8 (read as U+FFFD, counted as "
                    "undecodable_rows in the manifest): re-encode the input as UTF-8"
                    if counts["undecodable_rows"]
                    else ""
                )
            )
            check_reject_share(counts, settings.features.max_reject_share)

        outputs: dict[str, dict] = {}
        with progress.stage("write") as note:
            loans = validate.accepted(classified)
            frames = {
                "training": transform.training_features(loans),
                "latest": transform.latest_features(loans, params.as_of),
                "rejects": validate.rejects(classified, columns),
            }
            uris = {name: lake.join(snapshot, name) for name in frames}
            write_together(spark, frames, uris)
            for name, uri in uris.items():
                outputs[name] = {"uri": uri, "rows": lake.parquet_rows(uri, spark), "table": tables[name]}
            note(", ".join(f"{name} {o['rows']:,} rows" for name, o in outputs.items()))
            verdicts.unpersist()
            store.delete(staged_uri)

        with progress.stage("publish") as note:
            manifest = {
                "run_id": run_id,
                "as_of": params.as_of.isoformat(),
                "started_at": started.isoformat(),
                "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "input": input_meta,
                **counts,
                "max_reject_share": settings.features.max_reject_share,
                "outputs": outputs,
                "spark": {"version": spark.version, "master": spark.sparkContext.master},
                "code_version": code_version(),
                "stage_seconds": progress.durations(),
            }
            manifest_uri = lake.join(snapshot, "manifest.json")
            store.write_text_atomic(manifest_uri, json.dumps(manifest, indent=2))
            warmup.wait()
            hive.register(spark, settings.features.database, {o["table"]: o["uri"] for o in outputs.values()})
            pointer = {"run_id": run_id, "as_of": manifest["as_of"], "manifest": manifest_uri}
            store.write_text_atomic(lake.current_pointer_uri(settings), json.dumps(pointer, indent=2))
            published = True
            if params.manifest_path:
                lake.LocalLake().write_text_atomic(str(params.manifest_path), json.dumps(manifest, indent=2))
            note(f"snapshot {run_id} is current; tables {', '.join(tables.values())}")
        return manifest
    except BaseException:
        if not published:
            _roll_back(spark, settings, store, snapshot, previous)
        raise


def write_together(spark: SparkSession, frames: dict[str, DataFrame], uris: dict[str, str]) -> None:
    """Each frame as Parquet to its folder, the writes running as concurrent Spark jobs.

    One after the other, each write's planning, its small last stages and its commit left a core
    idle; together the scheduler fills it with another write's tasks. The jobs keep the run's job
    group (the threads inherit the caller's local properties), so a failure or an interrupt cancels
    the others; this returns or raises only once no write is running, before the caller rolls back."""
    from concurrent.futures import ThreadPoolExecutor

    from pyspark import inheritable_thread_target

    @inheritable_thread_target(spark)
    def write(name: str) -> None:
        frames[name].write.mode("errorifexists").parquet(uris[name])

    group = spark.sparkContext.getLocalProperty("spark.jobGroup.id")
    with ThreadPoolExecutor(len(frames), thread_name_prefix="write") as pool:
        futures = [pool.submit(write, name) for name in frames]
        try:
            for future in futures:
                future.result()
        except BaseException:
            if group:
                spark.sparkContext.cancelJobGroup(group)
            raise


def _roll_back(spark: SparkSession, settings: Settings, store: lake.Lake, snapshot: str, previous: dict | None) -> None:
    """Leave the previous snapshot current: its Hive locations back, the new folder gone."""
    try:
        if previous:
            manifest = lake.read_manifest(settings, previous["run_id"], spark)
            hive.register(
                spark, settings.features.database, {o["table"]: o["uri"] for o in manifest["outputs"].values()}
            )
    finally:
        store.delete(snapshot)


def manifest_counts(row_counts: dict, duplicates_rejected: int, copies_dropped: int) -> dict:
    """rows_in, rows_accepted, rejects per reason (every reason present, zeros included), exact copies dropped,
    and rows with bytes that are not UTF-8, from validate.row_level_counts and validate.duplicate_counts."""
    rejects = {reason: int(row_counts.get(reason, 0)) for reason in REJECT_REASONS}
    rejects[validate.DUPLICATE] = duplicates_rejected
    rows_in = int(row_counts["rows_in"])
    return {
        "rows_in": rows_in,
        "rows_accepted": rows_in - sum(rejects.values()) - copies_dropped,
        "rejects": rejects,
        "exact_duplicates_removed": copies_dropped,
        # Rows holding a byte that is not UTF-8 (read as U+FFFD), wherever they ended up.
        "undecodable_rows": int(row_counts["undecodable_rows"]),
    }


def check_reject_share(counts: dict, limit: float) -> None:
    rejected = sum(counts["rejects"].values())
    if counts["rows_in"] == 0:
        raise UserError("the input has a header but no rows: nothing to compute")
    share = rejected / counts["rows_in"]
    if share > limit:
        worst = max(counts["rejects"], key=counts["rejects"].get)
        raise UserError(
            f"{rejected:,} of {counts['rows_in']:,} rows ({share:.1%}) were rejected, over the limit of {limit:.1%} "
            f"(most: {worst} {counts['rejects'][worst]:,}); nothing was published: fix the input or raise "
            "features.max_reject_share"
        )
