"""Batch scoring: a features table scored by a registered model with Spark, written as Parquet and a Hive table.

The batch-prediction step of the original workflow. Output columns: `id`, `loan_id` (when
the input has it), `probability` (double), `label` (int: probability >= the model's
threshold) and `model_version` (string).

The model travels to the executors as its JSON bytes in a broadcast variable and is loaded
once per partition inside `mapInPandas`; each Arrow batch is one `inplace_predict` call.
Nothing a reader uses changes until the end: the Parquet goes to a new folder, then the
Hive table is pointed at it in one metastore call (features.hive.register).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from configuration.errors import UserError
from configuration.settings import Settings
from features import lake

KEY_COLUMNS = ("id", "loan_id")


def output_schema(has_loan_id: bool) -> str:
    keys = "id bigint, loan_id bigint" if has_loan_id else "id bigint"
    return f"{keys}, probability double, label int, model_version string"


def score_frame(frame, model_bytes: bytes, feature_names: tuple[str, ...], threshold: float, version: str):
    """DataFrame of features -> DataFrame of scores (a pure transformation: no I/O, no actions)."""
    missing = [name for name in ("id", *feature_names) if name not in frame.columns]
    if missing:
        raise UserError(f"the input lacks column(s) {', '.join(missing)}: score a features table (training or latest)")
    has_loan_id = "loan_id" in frame.columns
    keys = [c for c in KEY_COLUMNS if c in frame.columns]
    columns = [*keys, *feature_names]
    spark = frame.sparkSession
    model = spark.sparkContext.broadcast(bytes(model_bytes))
    names = list(feature_names)

    def score(batches):
        import numpy as np
        import xgboost

        booster = xgboost.Booster()  # once per partition, not per batch
        booster.load_model(bytearray(model.value))
        booster.set_param({"nthread": 1})  # Spark already runs one task per core
        for batch in batches:
            matrix = batch[names].to_numpy(dtype=np.float32, na_value=np.nan)
            probability = booster.inplace_predict(matrix, validate_features=False).astype(np.float64)
            out = batch[keys].astype("int64")
            out["probability"] = probability
            out["label"] = (probability >= threshold).astype(np.int32)
            out["model_version"] = version
            yield out

    # Casting the features to double keeps every integer column's nulls as NaN in pandas.
    prepared = frame.select(*keys, *[frame[c].cast("double").alias(c) for c in feature_names]).select(*columns)
    # A table written as one file is read as one partition, which would leave all but one
    # core idle while scoring: spread it first (a shuffle of a few columns, cheap beside scoring).
    parallelism = spark.sparkContext.defaultParallelism
    if prepared.rdd.getNumPartitions() < parallelism:
        prepared = prepared.repartition(parallelism)
    return prepared.mapInPandas(score, schema=output_schema(has_loan_id))


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


def run_batch(
    settings: Settings,
    *,
    input_uri: str | None = None,
    output_uri: str | None = None,
    version: str | None = None,
    table: str | None = None,
    spark=None,
) -> dict[str, Any]:
    from pathlib import Path

    from features import hive, session
    from serving.model import ModelSource, load_model
    from training.registry import open_registry

    registry = open_registry(settings)
    version = version or registry.alias()
    if version is None:
        raise UserError(
            f"no production model in {settings.registry_dir()}: promote one (python -m training promote VERSION) or pass --model-version"
        )
    model_dir = registry.model_dir(version)
    loaded = load_model(
        model_dir, ModelSource("registry", version=version), version
    )  # sha256 check + probe, on the driver
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

    own_session = spark is None
    if own_session:
        spark = session.build_session(settings, "sparkmaker-batch-scoring")
    started = time.perf_counter()
    try:
        from pyspark.errors import AnalysisException

        for uri in (input_uri, output_uri):
            session.require_filesystem(spark, uri)
        use_this_python_for_local_workers(spark)
        try:
            frame = spark.read.parquet(input_uri)
        except AnalysisException as exc:
            raise UserError(f"cannot read the input {input_uri} as Parquet: {str(exc).splitlines()[0]}") from None
        model_bytes = (Path(model_dir) / "xgboost-model").read_bytes()
        scored = score_frame(frame, model_bytes, loaded.feature_names, loaded.threshold, loaded.version)
        try:
            scored.write.mode("errorifexists").parquet(output_uri)
        except AnalysisException as exc:
            raise UserError(
                f"cannot write {output_uri}: {str(exc).splitlines()[0]} (choose another --output)"
            ) from None
        seconds = time.perf_counter() - started
        hive.register(spark, settings.features.database, {table_name: output_uri})
        summary = (
            spark.read.parquet(output_uri)
            .selectExpr("count(*) AS rows", "coalesce(sum(label), 0) AS positives")
            .first()
        )
    except UserError:
        raise
    except Exception as exc:
        explained = session.explain_metastore_error(exc, settings)
        if explained:
            raise explained from None
        raise
    finally:
        if own_session:
            spark.stop()
    return {
        "input": input_uri,
        "output": output_uri,
        "table": table_name,
        "model_version": loaded.version,
        "threshold": loaded.threshold,
        "rows": int(summary["rows"]),
        "positives": int(summary["positives"]),
        "seconds": round(seconds, 2),
        "rows_per_second": round(int(summary["rows"]) / seconds) if seconds > 0 else None,
    }
