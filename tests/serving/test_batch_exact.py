"""Batch scoring gives, on every row, the probability XGBoost's own inplace_predict gives in pandas.

The expected values are computed here without the module's code: pyarrow reads the same
Parquet, pandas makes the float32 matrix, a Booster loaded from the model file predicts
with all cores. Equality is exact (float32 semantics), whatever the plan of cores: one
file of one row group (one busy task, given both cores) and several files (several tasks).
Two models scored one after the other in the same session check that the Python workers'
Booster cache keys on the model. Both engines (serving.batch.choose_engine) are held to it, and
to each other: the in-process engine's casts (pyarrow) against the Spark engine's (Spark SQL) on
values float32 cannot hold exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost

from features.contract import FEATURE_COLUMNS
from configuration.errors import UserError
from serving.batch import Plan, choose_engine, output_schema, plan_cores, run_batch
from tests.serving.conftest import registry_with
from tests.serving.test_batch import _features_table


@pytest.mark.parametrize(
    ("local_master", "slots", "task_cpus", "busy", "expected"),
    [
        (True, 2, 1, 1, Plan(threads=2, spread_to=None)),  # one row group on local[2]: both cores, no shuffle
        (True, 2, 1, 2, Plan(threads=1, spread_to=None)),
        (True, 2, 1, 7, Plan(threads=1, spread_to=None)),
        (True, 8, 1, 3, Plan(threads=2, spread_to=None)),  # 3 tasks x 2 threads on 8 cores
        (True, 4, 2, 2, Plan(threads=2, spread_to=None)),  # spark.task.cpus = 2: each task already has 2
        (True, 2, 1, 0, Plan(threads=1, spread_to=None)),  # an empty input
        (False, 2, 1, 1, Plan(threads=1, spread_to=2)),  # a cluster: the idle cores are on other executors
        (False, 4, 2, 1, Plan(threads=2, spread_to=2)),
        (False, 4, 1, 4, Plan(threads=1, spread_to=None)),
    ],
)
def test_the_core_plan(local_master, slots, task_cpus, busy, expected):
    assert plan_cores(local_master=local_master, slots=slots, task_cpus=task_cpus, busy_partitions=busy) == expected


def _independent(model_dir: Path, source: Path) -> dict[int, float]:
    frame = pq.read_table(source).to_pandas()
    matrix = frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32, na_value=np.nan)
    booster = xgboost.Booster()
    booster.load_model(bytearray((model_dir / "xgboost-model").read_bytes()))
    return dict(zip(frame["id"].tolist(), booster.inplace_predict(matrix).astype(np.float64).tolist()))


def _check(result: dict, model_dir: Path, source: Path, rows: int) -> None:
    scored = pq.read_table(result["output"]).to_pandas()
    expected = _independent(model_dir, source)
    assert len(scored) == rows == len(expected) and scored["id"].is_unique
    got = dict(zip(scored["id"].tolist(), scored["probability"].tolist()))
    assert got.keys() == expected.keys()
    differing = [key for key in expected if got[key] != expected[key]]
    assert not differing, f"{len(differing)} rows differ, e.g. id {differing[0]}"
    threshold = json.loads((model_dir / "model-metadata.json").read_text())["threshold"]
    labels = [int(p >= threshold) for p in scored["probability"]]
    assert scored["label"].tolist() == labels
    assert result["rows"] == rows and result["positives"] == sum(labels) > 0


def test_every_probability_equals_xgboost_in_pandas(spark, lake_settings, model_a, model_b, tmp_path):
    registry_with(lake_settings.registry_dir(), model_a, model_b)
    table = _features_table(120_000, seed=47, with_loans=False)  # two Arrow batches of the scoring
    one_group = tmp_path / "one-row-group"
    one_group.mkdir()
    pq.write_table(table, one_group / "part-0.parquet", row_group_size=table.num_rows)
    several = tmp_path / "several-files"
    several.mkdir()
    for index, (start, stop) in enumerate([(0, 5_000), (5_000, 61_000), (61_000, 62_000), (62_000, 120_000)]):
        pq.write_table(table.slice(start, stop - start), several / f"part-{index}.parquet")

    in_process = run_batch(
        lake_settings, input_uri=str(several), output_uri=str(tmp_path / "arrow"), version="1", spark=spark
    )
    assert in_process["engine"] == "arrow"
    _check(in_process, model_a, several, 120_000)

    first = run_batch(
        lake_settings,
        input_uri=str(one_group),
        output_uri=str(tmp_path / "a1"),
        version="1",
        engine="spark",
        spark=spark,
    )
    assert (first["threads_per_task"], first["repartitioned_to"]) == (2, None)  # local[2], one busy task
    _check(first, model_a, one_group, 120_000)

    second = run_batch(
        lake_settings, input_uri=str(several), output_uri=str(tmp_path / "b2"), version="2", engine="spark", spark=spark
    )
    assert second["threads_per_task"] == 1 and second["repartitioned_to"] is None
    _check(second, model_b, several, 120_000)

    # The same input with the other model, in the same (reused) Python workers.
    third = run_batch(
        lake_settings,
        input_uri=str(one_group),
        output_uri=str(tmp_path / "b1"),
        version="2",
        engine="spark",
        spark=spark,
    )
    _check(third, model_b, one_group, 120_000)


@pytest.mark.parametrize("engine", ["arrow", "spark"])
def test_an_empty_input_writes_an_empty_table(spark, lake_settings, model_a, tmp_path, engine):
    registry_with(lake_settings.registry_dir(), model_a)
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(_features_table(1, seed=1, with_loans=True).slice(0, 0), empty / "part-0.parquet")

    result = run_batch(
        lake_settings, input_uri=str(empty), output_uri=str(tmp_path / "out"), version="1", engine=engine, spark=spark
    )

    assert (result["rows"], result["positives"]) == (0, 0) and result["engine"] == engine
    written = pq.read_table(result["output"])
    assert written.num_rows == 0
    assert written.schema.names == ["id", "loan_id", "probability", "label", "model_version"]
    assert written.schema.field("probability").type == pa.float64() and written.schema.field("label").type == pa.int32()


@pytest.mark.parametrize(
    ("requested", "local_master", "local_files", "castable", "rows", "expected"),
    [
        ("auto", True, True, True, 2_000_000, "arrow"),  # up to max_rows in process
        ("auto", True, True, True, 2_000_001, "spark"),
        ("auto", False, True, True, 10, "spark"),  # a cluster: its executors' cores
        ("auto", True, False, True, 10, "spark"),  # s3a://, hdfs://: Spark's connectors
        ("auto", True, True, False, 10, "spark"),  # a string or decimal column: Spark's casts
        ("spark", True, True, True, 10, "spark"),
        ("arrow", True, True, True, 50_000_000, "arrow"),  # asked for: no row limit
    ],
)
def test_the_engine_choice(requested, local_master, local_files, castable, rows, expected):
    chosen = choose_engine(
        requested, local_master=local_master, local_files=local_files, castable=castable, rows=rows, max_rows=2_000_000
    )
    assert chosen == expected


@pytest.mark.parametrize(
    ("local_master", "local_files", "castable"), [(False, True, True), (True, False, True), (True, True, False)]
)
def test_the_arrow_engine_refuses_what_it_cannot_do_as_spark_does(local_master, local_files, castable):
    with pytest.raises(UserError, match="use spark"):
        choose_engine(
            "arrow", local_master=local_master, local_files=local_files, castable=castable, rows=1, max_rows=10
        )


def test_both_engines_write_the_same_rows_and_schema(spark, lake_settings, model_a, tmp_path):
    """Values float32 cannot hold (int64 beyond 2^24, doubles with more digits, huge doubles), NULLs, int64 keys:
    the pyarrow casts of the arrow engine and Spark's SQL casts must round them alike."""
    registry_with(lake_settings.registry_dir(), model_a)
    booster = xgboost.Booster()
    booster.load_model(bytearray((model_a / "xgboost-model").read_bytes()))
    splits = booster.trees_to_dataframe().dropna(subset=["Split"])
    rng = np.random.default_rng(53)
    rows = 20_000
    columns = {
        "id": pa.array(rng.permutation(rows) + 2**40, pa.int64()),
        "loan_id": pa.array(np.arange(rows, dtype=np.int32), pa.int32()),  # an int32 key: widened by both
    }
    assert splits["Feature"].nunique() >= 3, splits["Feature"].unique()
    for index, name in enumerate(FEATURE_COLUMNS):
        # Half the rows right at the model's split thresholds, where a rounding that differs changes the leaf.
        thresholds = splits.loc[splits["Feature"].isin([name, f"f{index}"]), "Split"].to_numpy(np.float32)
        near = rng.choice(thresholds, rows) if len(thresholds) else np.zeros(rows, np.float32)
        if index % 2:
            values = rng.integers(-(2**40), 2**40, rows)  # beyond 2^24: rounded to float32 by both
            values[::2] = np.floor(near[::2]).astype(np.int64) + rng.integers(-1, 2, len(values[::2]))
            columns[name] = pa.array(values, pa.int64(), mask=rng.random(rows) < 0.1)
        else:
            values = rng.normal(0, 1, rows) * 10.0 ** rng.integers(-3, 6, rows)
            # Doubles within a float32 step of a threshold: a quarter, half (ties go to even) or three quarters.
            step = np.spacing(np.abs(near[::2])).astype(np.float64)
            values[::2] = near[::2].astype(np.float64) + step * rng.choice(
                [-0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75], len(step)
            )
            values[1::101] = 1e39  # beyond float32: +inf in both
            columns[name] = pa.array(values, pa.float64(), mask=rng.random(rows) < 0.1)
    source = tmp_path / "wide"
    source.mkdir()
    pq.write_table(pa.table(columns), source / "part-0.parquet", row_group_size=5_000)

    outputs = {}
    for engine in ("arrow", "spark"):
        result = run_batch(
            lake_settings,
            input_uri=str(source),
            output_uri=str(tmp_path / engine),
            version="1",
            table=f"scores_{engine}",
            engine=engine,
            spark=spark,
        )
        assert result["engine"] == engine and result["rows"] == rows
        outputs[engine] = pq.read_table(result["output"]).sort_by("id")
        # What registration assumes instead of reading the footers back: the schema Spark reads.
        assert spark.read.parquet(result["output"]).schema == spark.createDataFrame([], output_schema(True)).schema
        assert spark.table(result["table"]).count() == rows
    assert outputs["arrow"].equals(outputs["spark"])
    assert 0 < pa.compute.sum(outputs["arrow"].column("label")).as_py() < rows


def test_the_arrow_engine_leaves_no_output_when_reading_fails(spark, lake_settings, model_a, tmp_path):
    registry_with(lake_settings.registry_dir(), model_a)
    table = _features_table(1_000, seed=59, with_loans=False)
    source = tmp_path / "disagreeing"
    source.mkdir()
    pq.write_table(table, source / "part-0.parquet")
    broken = table.set_column(
        table.schema.get_field_index("age"), "age", pa.array(["thirty"] * table.num_rows, pa.string())
    )
    pq.write_table(broken, source / "part-1.parquet")  # the footers of part-0 decide the engine; part-1 fails it
    output = tmp_path / "out"

    with pytest.raises(UserError, match="cannot read the input"):
        run_batch(
            lake_settings, input_uri=str(source), output_uri=str(output), version="1", engine="arrow", spark=spark
        )

    assert not output.exists()
    assert not spark.catalog.tableExists(f"{lake_settings.features.database}.{lake_settings.serving.batch_table}")


@pytest.mark.parametrize(
    ("key_type", "feature_type", "castable"),
    [
        (pa.int64(), pa.float64(), True),
        (pa.int32(), pa.int32(), True),
        (pa.int64(), pa.float32(), True),
        (pa.uint64(), pa.float64(), False),  # Spark reads UINT64 as decimal(20,0)
        (pa.int64(), pa.string(), False),
        (pa.int64(), pa.decimal128(22, 2), False),
    ],
)
def test_what_the_arrow_engine_takes(tmp_path, key_type, feature_type, castable):
    from serving.batch_arrow import input_facts

    columns = {"id": pa.array([1, 2], key_type)}
    for name in FEATURE_COLUMNS:
        columns[name] = pa.array([1, None], pa.int64()).cast(feature_type)
    pq.write_table(pa.table(columns), tmp_path / "part-0.parquet")
    (tmp_path / "_SUCCESS").touch()  # skipped, as Spark skips it

    facts = input_facts(tmp_path, ["id", "loan_id"], tuple(FEATURE_COLUMNS))

    assert facts is not None and (facts.rows, facts.castable) == (2, castable)
    assert facts.columns == ["id", *FEATURE_COLUMNS]


def test_the_arrow_engine_leaves_partition_folders_and_empty_folders_to_spark(tmp_path):
    from serving.batch_arrow import input_facts

    (tmp_path / "empty").mkdir()
    assert input_facts(tmp_path / "empty", ["id"], tuple(FEATURE_COLUMNS)) is None
    partitioned = tmp_path / "partitioned" / "as_of=2024-06-01"
    partitioned.mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array([1], pa.int64())}), partitioned / "part-0.parquet")
    assert input_facts(tmp_path / "partitioned", ["id"], tuple(FEATURE_COLUMNS)) is None
