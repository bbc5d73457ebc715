"""Where the monitoring results live: Parquet under each snapshot, Hive tables over all snapshots, and reading data back.

    <snapshot>/monitoring/drift/part-0.parquet              one row per feature per comparison
    <snapshot>/monitoring/prediction_drift/part-0.parquet   one row
    <snapshot>/monitoring/realized_quality/part-0.parquet   one row per model version that served
    <lake>/<dataset>/monitoring/latest.json                 the latest figures (monitoring.figures)

Hive tables `<features.database>.drift`, `.prediction_drift`, `.realized_quality` are
partitioned by `snapshot_run_id`, each partition located in its snapshot's folder, so the
history is one SQL query over the Thrift server, and a pruned snapshot takes its
partition with it (dropped at the next registration).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configuration.errors import UserError
from configuration.files import write_atomic
from configuration.settings import Settings
from features import lake

_S, _D, _I = pa.string(), pa.float64(), pa.int64()
SCHEMAS: dict[str, pa.Schema] = {
    "drift": pa.schema(
        [
            ("snapshot_run_id", _S),
            ("comparison", _S),
            ("reference_run_id", _S),
            ("feature", _S),
            ("status", _S),
            ("psi", _D),
            ("ks_statistic", _D),
            ("ks_pvalue", _D),
            ("reference_rows", _I),
            ("current_rows", _I),
            ("reference_missing_share", _D),
            ("current_missing_share", _D),
            ("missing_share_change", _D),
            ("psi_warn", _D),
            ("psi_alert", _D),
            ("bins_json", _S),
            ("note", _S),
            ("computed_at", _S),
        ]
    ),
    "prediction_drift": pa.schema(
        [
            ("snapshot_run_id", _S),
            ("model_version", _S),
            ("status", _S),
            ("psi", _D),
            ("ks_statistic", _D),
            ("ks_pvalue", _D),
            ("served_rows", _I),
            ("other_version_rows", _I),
            ("reference_rows", _I),
            ("served_positive_share", _D),
            ("reference_positive_share", _D),
            ("threshold", _D),
            ("window_start", _S),
            ("window_end", _S),
            ("bins_json", _S),
            ("note", _S),
            ("computed_at", _S),
        ]
    ),
    "realized_quality": pa.schema(
        [
            ("snapshot_run_id", _S),
            ("model_version", _S),
            ("status", _S),
            ("served_predictions", _I),
            ("distinct_predictions", _I),
            ("matched_predictions", _I),
            ("positives", _I),
            ("roc_auc", _D),
            ("brier", _D),
            ("calibration_json", _S),
            ("note", _S),
            ("computed_at", _S),
        ]
    ),
}
TABLES = tuple(SCHEMAS)
PART = "part-0.parquet"
_SPARK_TYPES = {pa.string(): "STRING", pa.float64(): "DOUBLE", pa.int64(): "BIGINT"}


def result_uri(settings: Settings, run_id: str, table: str) -> str:
    return lake.join(lake.snapshot_uri(settings, run_id), "monitoring", table)


def to_arrow(table: str, rows: list[dict]) -> pa.Table:
    schema = SCHEMAS[table]
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def write_results(settings: Settings, run_id: str, table: str, rows: list[dict], spark=None) -> str:
    """Replace the snapshot's `table` results with `rows` (an empty list writes an empty file with the schema)."""
    uri = result_uri(settings, run_id, table)
    data = to_arrow(table, rows)
    if lake.is_local(uri):
        buffer = io.BytesIO()
        pq.write_table(data, buffer)
        write_atomic(lake.local_path(uri) / PART, buffer.getvalue())
    else:
        spark.createDataFrame(data.to_pandas(), schema=spark_ddl(table)).coalesce(1).write.mode("overwrite").parquet(
            uri
        )
    return uri


def read_results(settings: Settings, run_id: str, table: str) -> pd.DataFrame | None:
    """A snapshot's stored results (local lakes), or None when that snapshot was never monitored."""
    uri = result_uri(settings, run_id, table)
    path = lake.local_path(uri) / PART
    if not lake.is_local(uri) or not path.is_file():
        return None
    return pq.read_table(path).to_pandas()


def history(settings: Settings, table: str) -> pd.DataFrame:
    """Every snapshot's results of `table`, oldest snapshot first (local lakes; empty elsewhere)."""
    root = lake.snapshot_uri(settings, "")
    frames = []
    if lake.is_local(root) and lake.local_path(root).is_dir():
        for path in sorted(lake.local_path(root).glob(f"*/monitoring/{table}/{PART}")):
            frames.append(pq.read_table(path).to_pandas())
    if not frames:
        return to_arrow(table, []).to_pandas()
    return pd.concat(frames, ignore_index=True)


def read_columns(settings: Settings, uri: str, columns: list[str], spark=None) -> pd.DataFrame:
    """Some columns of a Parquet dataset (a snapshot's table) as pandas: pyarrow on a local lake, Spark elsewhere."""
    if lake.is_local(uri):
        path = lake.local_path(uri)
        if not path.exists():
            raise UserError(
                f"{uri} does not exist: the snapshot was deleted or is incomplete; run the feature job again"
            )
        return pq.read_table(path, columns=columns).to_pandas()
    if spark is None:
        from features.session import build_session

        spark = build_session(settings, "sparkmaker-monitoring")
    return spark.read.parquet(uri).select(*columns).toPandas()


# Hive --------------------------------------------------------------------------------------
def spark_ddl(table: str) -> str:
    return ", ".join(f"`{field.name}` {_SPARK_TYPES[field.type]}" for field in SCHEMAS[table])


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register(spark, settings: Settings, run_id: str) -> list[str]:
    """Add (or repoint) this snapshot's partition of each table; drop partitions whose snapshot is gone. Returns the tables."""
    database = settings.features.database
    if not spark.catalog.databaseExists(database):  # IF NOT EXISTS alone logs the metastore's exception
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    names = []
    for table in TABLES:
        name = f"`{database}`.`{table}`"
        root = lake.join(lake.dataset_uri(settings), "monitoring", "tables", table)
        if lake.is_local(root):
            lake.local_path(root).mkdir(parents=True, exist_ok=True)  # Spark warns about a missing table folder
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {name} ({spark_ddl(table)}) USING parquet "
            f"PARTITIONED BY (snapshot_run_id) LOCATION {_sql_string(root)}"
        )
        for row in spark.sql(f"SHOW PARTITIONS {name}").collect():
            other = row[0].split("=", 1)[1]
            if (
                other != run_id
                and lake.is_local(root)
                and not Path(lake.local_path(result_uri(settings, other, table))).exists()
            ):
                spark.sql(f"ALTER TABLE {name} DROP IF EXISTS PARTITION (snapshot_run_id = {_sql_string(other)})")
        spec = f"PARTITION (snapshot_run_id = {_sql_string(run_id)})"
        location = _sql_string(result_uri(settings, run_id, table))
        known = {row[0] for row in spark.sql(f"SHOW PARTITIONS {name}").collect()}
        if f"snapshot_run_id={run_id}" not in known:
            spark.sql(f"ALTER TABLE {name} ADD {spec} LOCATION {location}")
        spark.sql(f"REFRESH TABLE {name}")
        names.append(f"{database}.{table}")
    return names
