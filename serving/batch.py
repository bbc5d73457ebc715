"""Batch scoring: a features table scored by a registered model, written as Parquet and a Hive table.

The batch-prediction step of the original workflow. Output columns: `id`, `loan_id` (when
the input has it), `probability` (double), `label` (int: probability >= the model's
threshold) and `model_version` (string).

Two engines, one scoring step (serving.batch_scoring), the same rows bit for bit (tested);
`choose_engine` decides. On a local master, a local input of at most
`serving.batch_arrow_max_rows` rows is scored in this process (serving.batch_arrow): Spark
would add about a second of fixed costs and no cores. Anything else is one Spark job: scan,
`mapInArrow` (each Arrow batch is one `inplace_predict` call), Parquet write; its row and
positive counts come from an Observation on that same job, not from another pass. The model
travels as its JSON bytes in a broadcast variable and is loaded once per Python worker
process (cached by its sha256: a reused worker keeps it from task to task). Each task
predicts with the cores it has (`spark.task.cpus`), except that on a local master an input
with fewer non-empty partitions than cores (a file of one row group is one task however
Spark splits it) gives each task the idle cores instead of a shuffle; on a cluster such an
input is spread with a hash repartition. Probabilities are XGBoost's `inplace_predict` on
float32 features, as the model server computes them.
Nothing a reader uses changes until the end: the Parquet goes to a new folder, then the
Hive table is pointed at it in one metastore call (features.hive.register).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from configuration.errors import UserError, excerpt, last_error_line
from configuration.settings import Settings
from features import lake
from serving.batch_scoring import scorer

KEY_COLUMNS = ("id", "loan_id")
# Rows per Arrow batch sent to the Python worker (Spark's default is 10,000): each batch
# is one inplace_predict call with a fixed cost (~0.3-0.6 ms here) and a few array copies;
# 100,000 rows of six columns is ~3 MB per batch, small beside a worker's memory.
ARROW_BATCH_ROWS = 100_000
_ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


def output_schema(has_loan_id: bool) -> str:
    keys = "id bigint, loan_id bigint" if has_loan_id else "id bigint"
    return f"{keys}, probability double, label int, model_version string"


def spark_output_schema(keys: list[str]):
    """output_schema as a StructType (a running session parses it): what Spark reads back from either engine's files."""
    from pyspark.sql.types import StructType

    schema = StructType.fromDDL(output_schema("loan_id" in keys))
    assert isinstance(schema, StructType)
    return schema


@dataclass(frozen=True)
class Plan:
    """How the scoring uses the cores: threads per predict call, and a repartition or none."""

    threads: int
    spread_to: int | None


def plan_cores(*, local_master: bool, slots: int, task_cpus: int, busy_partitions: int) -> Plan:
    """The one place that decides how many cores each task's predict uses (a pure function).

    slots: cores Spark runs tasks on (defaultParallelism); busy_partitions: input partitions
    holding rows. Spark gives each task `task_cpus` cores. When there are fewer busy
    partitions than task slots, cores would sit idle: on a local master all tasks share one
    executor, so each task may take its share of the idle cores at no cost; on a cluster the
    idle cores are on other executors, reachable only by spreading the rows (a shuffle).
    """
    task_cpus = max(task_cpus, 1)
    task_slots = max(slots // task_cpus, 1)
    if busy_partitions >= task_slots or busy_partitions == 0:
        return Plan(threads=task_cpus, spread_to=None)
    if local_master:
        return Plan(threads=max(task_cpus, slots // busy_partitions), spread_to=None)
    return Plan(threads=task_cpus, spread_to=task_slots)


def busy_partition_count(frame) -> int:
    """Input partitions that hold at least one row: a scan of no columns (Parquet footers only).

    Spark splits a file by bytes but reads a row group in the split holding its middle, so a
    small file of one row group is two partitions, one of them empty: getNumPartitions()
    overstates the tasks that will do work.
    """
    from pyspark.sql import functions as F

    return len(frame.select(F.spark_partition_id().alias("partition")).distinct().collect())


def score_frame(
    frame,
    model_bytes: bytes,
    feature_names: tuple[str, ...],
    threshold: float,
    version: str,
    plan: Plan = Plan(threads=1, spread_to=None),
):
    """DataFrame of features -> DataFrame of scores (a pure transformation: no I/O, no actions)."""
    keys = check_columns(frame.columns, feature_names)
    has_loan_id = "loan_id" in keys
    model = frame.sparkSession.sparkContext.broadcast(bytes(model_bytes))
    score = scorer(
        lambda: model.value,
        hashlib.sha256(model_bytes).hexdigest(),
        keys,
        len(feature_names),
        threshold,
        version,
        plan.threads,
    )

    # float32 in Spark is XGBoost's float32 (IEEE round to nearest, like numpy's astype), at
    # half the bytes of double through Arrow; integer nulls stay nulls and become NaN in the scoring.
    prepared = frame.select(
        *[frame[c].cast("bigint").alias(c) for c in keys], *[frame[c].cast("float").alias(c) for c in feature_names]
    )
    if plan.spread_to:
        prepared = prepared.repartition(plan.spread_to, "id")
    return prepared.mapInArrow(score.score_batches, schema=output_schema(has_loan_id))


def use_this_python_for_local_workers(spark) -> None:
    """On a local master, run the Python workers with this interpreter (the one that has pandas/pyarrow/xgboost).

    PySpark otherwise starts `python3` from PATH, which need not be the project's venv.
    An explicit PYSPARK_PYTHON (pythonExec other than the default) is left alone, and so
    is any cluster master, whose executors' Python the cluster decides.
    """
    import sys

    context = spark.sparkContext
    if context.master.startswith("local") and context.pythonExec == "python3":
        context.pythonExec = sys.executable


def default_output(settings: Settings, run_id: str | None, version: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{run_id}-v{version}" if run_id else f"{stamp}-v{version}"
    return lake.join(lake.dataset_uri(settings), "batch_predictions", name)


def core_plan(spark, frame) -> Plan:
    context = spark.sparkContext
    return plan_cores(
        local_master=context.master.startswith("local"),
        slots=context.defaultParallelism,
        task_cpus=int(context.getConf().get("spark.task.cpus", "1")),
        busy_partitions=busy_partition_count(frame),
    )


def choose_engine(
    requested: str, *, local_master: bool, local_files: bool, castable: bool, rows: int, max_rows: int
) -> str:
    """The one place that decides which engine scores (a pure function): "spark" or "arrow".

    arrow (serving.batch_arrow) needs what it can do as Spark does: files on this machine, key
    and feature columns of numeric types, and a local master (on a cluster the executors' cores
    are the point). auto takes it for inputs of at most max_rows rows, where Spark's fixed costs
    outweigh the work.
    """
    arrow_possible = local_master and local_files and castable
    if requested == "arrow" and not arrow_possible:
        raise UserError(
            "serving.batch_engine = arrow scores local files on a local master, with integer keys and numeric "
            "features: use spark (or auto) for this input"
        )
    if requested == "auto":
        return "arrow" if arrow_possible and rows <= max_rows else "spark"
    return requested


def check_columns(columns: list[str], feature_names: tuple[str, ...]) -> list[str]:
    """The key columns present; a UserError if the model's features or the id are missing."""
    missing = [name for name in ("id", *feature_names) if name not in columns]
    if missing:
        raise UserError(f"the input lacks column(s) {', '.join(missing)}: score a features table (training or latest)")
    return [c for c in KEY_COLUMNS if c in columns]


def run_batch(
    settings: Settings,
    *,
    input_uri: str | None = None,
    output_uri: str | None = None,
    version: str | None = None,
    table: str | None = None,
    engine: str | None = None,
    spark=None,
) -> dict[str, Any]:
    from pathlib import Path

    from features import hive, session
    from serving import batch_arrow
    from serving.model import ModelSource, load_model
    from training.registry import open_registry

    began = time.perf_counter()
    registry = open_registry(settings)
    version = version or registry.alias()
    if version is None:
        raise UserError(
            f"no production model in {settings.registry_dir()}: promote one (python -m training promote VERSION) or pass --model-version"
        )
    model_dir = registry.model_dir(version)
    # The sha256 check and a probe prediction, on the driver; no fast path: batches go to XGBoost.
    loaded = load_model(model_dir, ModelSource("registry", version=version), version, compile_fast_path=False)
    model_bytes = (Path(model_dir) / "xgboost-model").read_bytes()
    run_id = None
    if input_uri is None:
        manifest = lake.read_manifest(settings, spark=spark)
        input_uri = manifest["outputs"]["latest"]["uri"]
        run_id = manifest["run_id"]
    elif "://" not in input_uri:
        input_uri = str(Path(input_uri).resolve())
    if output_uri is None:
        output_uri = default_output(settings, run_id, loaded.version)
    elif "://" not in output_uri:
        output_uri = str(Path(output_uri).resolve())
    table_name = f"{settings.features.database}.{table or settings.serving.batch_table}"

    timings = {"model": time.perf_counter() - began}  # registry, sha256 check, probe
    own_session = spark is None
    if own_session:
        spark = session.build_session(settings, "sparkmaker-batch-scoring")
    started = time.perf_counter()  # the JVM and session start are not counted
    plan: Plan | None = None
    warmup = None
    try:
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import AnalysisException
        from pyspark.sql.pandas.types import to_arrow_schema

        for uri in (input_uri, output_uri):
            session.require_filesystem(spark, uri)
        input_path, output_path = (
            lake.local_path(uri) if lake.is_local(uri) else None for uri in (input_uri, output_uri)
        )
        facts = None
        if input_path is not None and output_path is not None and input_path.exists():
            facts = batch_arrow.input_facts(input_path, list(KEY_COLUMNS), loaded.feature_names)
        chosen = choose_engine(
            engine or settings.serving.batch_engine,
            local_master=spark.sparkContext.master.startswith("local"),
            local_files=facts is not None,
            castable=facts is not None and facts.castable,
            rows=facts.rows if facts else 0,
            max_rows=settings.serving.batch_arrow_max_rows,
        )
        if chosen == "arrow":
            assert facts is not None and input_path is not None and output_path is not None
            keys = check_columns(facts.columns, loaded.feature_names)
            timings["read_and_plan"] = time.perf_counter() - started
            batch_arrow.new_output(output_path)
            # The JVM is idle while this process scores: a new session's metastore client (seconds: Hive
            # classes, the Derby boot or the Thrift connection) starts meanwhile. Not beside the Spark
            # engine, whose job needs the same cores (measured: no gain there).
            warmup = hive.Warmup(spark, settings.features.database, [table_name])
            rows, positives = batch_arrow.score_to_parquet(
                input_path,
                output_path,
                model_bytes,
                hashlib.sha256(model_bytes).hexdigest(),
                keys,
                loaded.feature_names,
                loaded.threshold,
                loaded.version,
                to_arrow_schema(spark_output_schema(keys)),
            )
        else:
            use_this_python_for_local_workers(spark)
            try:
                frame = spark.read.parquet(input_uri)
            except AnalysisException as exc:
                raise UserError(f"cannot read the input {input_uri} as Parquet: {str(exc).splitlines()[0]}") from None
            except Py4JJavaError as exc:  # a footer Spark cannot read (not Parquet, damaged): its job failed
                raise UserError(f"cannot read the input {input_uri} as Parquet: {java_cause(exc)}") from None
            keys = check_columns(frame.columns, loaded.feature_names)
            plan = core_plan(spark, frame)
            timings["read_and_plan"] = time.perf_counter() - started
            scored = score_frame(frame, model_bytes, loaded.feature_names, loaded.threshold, loaded.version, plan)
            rows, positives = write_scores(spark, scored, output_uri)
        written = time.perf_counter()
        timings["score_and_write"] = written - started - timings["read_and_plan"]
        if warmup is not None:
            warmup.wait()
        # No footer read here: the schema Spark reads back is known (tested for both engines).
        hive.register(
            spark, settings.features.database, {table_name: output_uri}, {table_name: spark_output_schema(keys)}
        )
        timings["register"] = time.perf_counter() - written
    except UserError:
        raise
    except Exception as exc:
        explained = session.explain_metastore_error(exc, settings)
        if explained:
            raise explained from None
        raise
    finally:
        if warmup is not None:
            warmup.join()  # its catalog calls never run into spark.stop()
        if own_session:
            spark.stop()
    seconds = sum(timings.values())
    return {
        "input": input_uri,
        "output": output_uri,
        "table": table_name,
        "model_version": loaded.version,
        "threshold": loaded.threshold,
        "rows": rows,
        "positives": positives,
        "engine": chosen,
        "threads_per_task": plan.threads if plan else None,
        "repartitioned_to": plan.spread_to if plan else None,
        # Everything but the JVM and session start: model, read, score, write, register.
        "seconds": round(seconds, 2),
        "timings": {name: round(value, 2) for name, value in timings.items()},
        "rows_per_second": round(rows / seconds) if seconds > 0 else None,
    }


def java_cause(exc: BaseException) -> str:
    """The innermost cause a Java stack trace names, as one short line (not the pages of frames around it)."""
    causes = re.findall(r"(?m)^Caused by: (?:[\w.$]+: )?(.+)$", str(exc))
    return excerpt(causes[-1] if causes else last_error_line(str(exc)), 300)


def write_scores(spark, scored, output_uri: str) -> tuple[int, int]:
    """The Spark engine's one job: scored rows written as Parquet; (rows, positives) observed on it."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    counts = Observation("batch_scoring")
    observed = scored.observe(
        counts, F.count(F.lit(1)).alias("rows"), F.coalesce(F.sum("label"), F.lit(0)).alias("positives")
    )
    previous_batch_rows = spark.conf.get(_ARROW_BATCH_CONF)
    spark.conf.set(_ARROW_BATCH_CONF, str(ARROW_BATCH_ROWS))
    try:
        observed.write.mode("errorifexists").parquet(output_uri)
    except AnalysisException as exc:
        raise UserError(f"cannot write {output_uri}: {str(exc).splitlines()[0]} (choose another --output)") from None
    finally:
        spark.conf.set(_ARROW_BATCH_CONF, previous_batch_rows)  # the caller's session as it was
    return int(counts.get["rows"]), int(counts.get["positives"])
