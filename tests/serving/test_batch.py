"""Batch scoring with the shared SparkSession, compared with XGBoost run on the same rows in pandas.

Each test runs both engines: `auto` (these small local inputs go to the in-process arrow engine)
and `spark` (a Spark job)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configuration.errors import UserError
from features import lake
from features.contract import FEATURE_COLUMNS
from serving.batch import run_batch
from tests.serving.conftest import reference_predict, registry_with, synthetic_features

INT_FEATURES = ("nb_previous_loans", "age", "years_on_the_job", "flag_own_car")


def _features_table(rows: int, seed: int, with_loans: bool) -> pa.Table:
    """A table in the lake's exact schema (contract: bigint keys, int/double features, real NULLs)."""
    matrix = synthetic_features(rows, seed)
    columns: dict[str, pa.Array] = {"id": pa.array(np.arange(5_000_000, 5_000_000 + rows), pa.int64())}
    if with_loans:
        columns["loan_id"] = pa.array(np.arange(rows) * 7 + 1, pa.int64())
        columns["loan_date"] = pa.array([dt.date(2024, 1, 1)] * rows, pa.date32())
    else:
        columns["as_of"] = pa.array([dt.date(2024, 6, 1)] * rows, pa.date32())
    for index, name in enumerate(FEATURE_COLUMNS):
        values = matrix[:, index]
        kind = pa.int32() if name in INT_FEATURES else pa.float64()
        python = [None if np.isnan(v) else (int(v) if name in INT_FEATURES else float(v)) for v in values]
        columns[name] = pa.array(python, kind)
    if with_loans:
        columns["status"] = pa.array(np.zeros(rows, dtype=np.int32))
    return pa.table(columns)


def _publish_latest(settings, table: pa.Table, run_id: str = "20240601T000000Z-abc123") -> str:
    """A snapshot with a manifest and CURRENT pointer, laid out as features.lake describes."""
    snapshot = Path(lake.snapshot_uri(settings, run_id))
    (snapshot / "latest").mkdir(parents=True)
    pq.write_table(table, snapshot / "latest" / "part-0.parquet")
    manifest = {
        "run_id": run_id,
        "as_of": "2024-06-01",
        "outputs": {"latest": {"uri": str(snapshot / "latest"), "rows": table.num_rows, "table": "x.latest_features"}},
    }
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    Path(lake.current_pointer_uri(settings)).write_text(
        json.dumps({"run_id": run_id, "as_of": "2024-06-01", "manifest": str(snapshot / "manifest.json")})
    )
    return str(snapshot / "latest")


def _expected(model_dir: Path, table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    matrix = frame[list(FEATURE_COLUMNS)].astype("float64").to_numpy(dtype=np.float32)
    frame["expected"] = reference_predict(model_dir, matrix)
    return frame


ENGINES = pytest.mark.parametrize(("engine", "expected_engine"), [("auto", "arrow"), ("spark", "spark")])


@ENGINES
def test_default_scores_the_current_latest_snapshot_with_the_production_model(
    spark, lake_settings, model_a, model_b, engine, expected_engine
):
    registry = registry_with(lake_settings.registry_dir(), model_a, model_b)
    registry.promote("2")
    table = _features_table(3000, seed=41, with_loans=False)
    _publish_latest(lake_settings, table)

    result = run_batch(lake_settings, engine=engine, spark=spark)

    assert result["engine"] == expected_engine
    assert result["model_version"] == "2" and result["rows"] == 3000
    assert "20240601T000000Z-abc123-v2" in result["output"]
    scored = pq.read_table(result["output"]).to_pandas()
    assert list(scored.columns) == ["id", "probability", "label", "model_version"]
    joined = _expected(model_b, table).merge(scored, on="id", validate="one_to_one")
    assert len(joined) == 3000
    np.testing.assert_allclose(joined["probability"], joined["expected"], rtol=0, atol=1e-6)
    threshold = json.loads((model_b / "model-metadata.json").read_text())["threshold"]
    assert (joined["label"] == (joined["probability"] >= threshold).astype(int)).all()
    assert 0 < joined["label"].sum() < 3000
    assert set(joined["model_version"]) == {"2"}
    assert result["positives"] == int(joined["label"].sum())
    hive = spark.table(result["table"])
    assert result["table"] == f"{lake_settings.features.database}.batch_predictions"
    assert hive.count() == 3000


@ENGINES
def test_explicit_input_with_loans_output_and_version(spark, lake_settings, model_a, tmp_path, engine, expected_engine):
    registry_with(lake_settings.registry_dir(), model_a)
    table = _features_table(500, seed=43, with_loans=True)
    source = tmp_path / "training"
    source.mkdir()
    pq.write_table(table, source / "part-0.parquet")
    output = tmp_path / "scores"

    result = run_batch(
        lake_settings,
        input_uri=str(source),
        output_uri=str(output),
        version="1",
        table="scores_v1",
        engine=engine,
        spark=spark,
    )

    assert result["engine"] == expected_engine
    scored = pq.read_table(output).to_pandas()
    assert list(scored.columns) == ["id", "loan_id", "probability", "label", "model_version"]
    joined = _expected(model_a, table).merge(scored, on=["id", "loan_id"], validate="one_to_one")
    np.testing.assert_allclose(joined["probability"], joined["expected"], atol=1e-6)
    assert spark.table(result["table"]).count() == 500

    with pytest.raises(UserError, match="choose another --output"):
        run_batch(lake_settings, input_uri=str(source), output_uri=str(output), version="1", engine=engine, spark=spark)
    assert pq.read_table(output).num_rows == 500  # the existing output is left as it was


@pytest.mark.parametrize("engine", ["auto", "spark"])
def test_batch_mistakes_are_user_errors(spark, lake_settings, model_a, tmp_path, engine):
    with pytest.raises(UserError, match="no production model"):
        run_batch(lake_settings, engine=engine, spark=spark)
    registry_with(lake_settings.registry_dir(), model_a).promote("1")
    with pytest.raises(UserError, match="no feature snapshot"):
        run_batch(lake_settings, engine=engine, spark=spark)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    pq.write_table(pa.table({"id": pa.array([1], pa.int64()), "age": pa.array([30], pa.int32())}), wrong / "p.parquet")
    with pytest.raises(UserError, match="lacks column"):
        run_batch(lake_settings, input_uri=str(wrong), engine=engine, spark=spark)
    with pytest.raises(UserError, match="cannot read the input"):
        run_batch(lake_settings, input_uri=str(tmp_path / "absent"), engine=engine, spark=spark)
    not_parquet = tmp_path / "csv"
    not_parquet.mkdir()
    (not_parquet / "part-0.csv").write_text("id,age\n1,30\n")
    with pytest.raises(UserError, match="cannot read the input"):
        run_batch(lake_settings, input_uri=str(not_parquet), engine=engine, spark=spark)


def test_a_footer_spark_cannot_read_becomes_its_cause_in_one_line(spark, tmp_path):
    """What the Spark engine says of a remote input that is not Parquet (a local one is refused before Spark)."""
    from py4j.protocol import Py4JJavaError

    from serving.batch import java_cause

    folder = tmp_path / "not-parquet"
    folder.mkdir()
    (folder / "part-0.parquet").write_text("id,age\n1,30\n")
    with pytest.raises(Py4JJavaError) as caught:
        spark.read.parquet(str(folder))
    line = java_cause(caught.value)
    assert "is not a Parquet file" in line and "\n" not in line and len(line) <= 330, line
