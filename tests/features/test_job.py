"""The feature job end to end: generated data against the plain-Python reference, publishing, failures."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configuration.errors import UserError
from configuration.settings import REPO_ROOT
from features import job, lake
from features.contract import LATEST_COLUMNS, REJECT_REASONS, TRAINING_COLUMNS
from features.progress import Progress
from features.sample_data import generate, write
from tests.features import reference

AS_OF = dt.date(2021, 6, 30)  # inside the generated loan dates, so some customers have no loan before it


@pytest.fixture(scope="module")
def generated_csv(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "loans.csv"
    raw, truth = generate(rows=20_000, seed=11, dirty=0.01)
    write(raw, truth, out)
    return out


def run_job(spark, settings, csv_path: Path, as_of: dt.date = AS_OF, **kw) -> dict:
    params = job.JobParams(input_uri=str(csv_path), as_of=as_of, **kw)
    return job.run(spark, settings, params, Progress("test", stream=open(os.devnull, "w")))


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_generated_file_matches_the_plain_python_reference(spark, lake_settings, generated_csv, tmp_path):
    manifest = run_job(spark, lake_settings, generated_csv, manifest_path=tmp_path / "m.json")
    expected = reference.compute(str(generated_csv), AS_OF)

    training = pq.read_table(manifest["outputs"]["training"]["uri"]).to_pylist()
    assert pq.read_schema(_first_file(manifest, "training")).names == list(TRAINING_COLUMNS)
    assert len(training) == len(expected.training)
    for row in training:
        want = expected.training[row["loan_id"]]
        for column in ("id", "loan_date", "nb_previous_loans", "age", "years_on_the_job", "flag_own_car", "status"):
            assert row[column] == want[column], (row["loan_id"], column)
        assert close(row["avg_amount_loans_previous"], want["avg_amount_loans_previous"]), row["loan_id"]

    latest = pq.read_table(manifest["outputs"]["latest"]["uri"]).to_pylist()
    assert set(latest[0]) == set(LATEST_COLUMNS)
    assert {row["id"] for row in latest} == set(expected.latest)
    for row in latest:
        want = expected.latest[row["id"]]
        for column in ("as_of", "nb_previous_loans", "age", "years_on_the_job", "flag_own_car"):
            assert row[column] == want[column], (row["id"], column)
        assert close(row["avg_amount_loans_previous"], want["avg_amount_loans_previous"])

    assert manifest["rows_in"] == expected.rows_in
    assert manifest["rows_accepted"] == len(expected.training)
    assert manifest["exact_duplicates_removed"] == expected.exact_duplicates_removed
    assert manifest["rejects"] == {reason: expected.rejects.get(reason, 0) for reason in REJECT_REASONS}
    assert (
        manifest["rows_in"]
        == manifest["rows_accepted"] + sum(manifest["rejects"].values()) + manifest["exact_duplicates_removed"]
    )
    assert json.loads((tmp_path / "m.json").read_text()) == manifest


def _first_file(manifest: dict, output: str) -> Path:
    return next(Path(manifest["outputs"][output]["uri"]).glob("*.parquet"))


def test_manifest_describes_the_input_and_outputs(spark, lake_settings, generated_csv):
    import hashlib

    manifest = run_job(spark, lake_settings, generated_csv)
    assert manifest["input"]["sha256"] == hashlib.sha256(generated_csv.read_bytes()).hexdigest()
    assert manifest["input"]["size_bytes"] == generated_csv.stat().st_size
    assert manifest["as_of"] == AS_OF.isoformat()
    assert dt.datetime.fromisoformat(manifest["started_at"]) <= dt.datetime.fromisoformat(manifest["finished_at"])
    for output in manifest["outputs"].values():
        on_disk = sum(pq.read_metadata(p).num_rows for p in Path(output["uri"]).glob("*.parquet"))
        assert spark.table(output["table"]).count() == output["rows"] == on_disk
    assert lake.read_current(lake_settings)["run_id"] == manifest["run_id"]
    assert lake.read_manifest(lake_settings) == manifest
    rejects = spark.table(manifest["outputs"]["rejects"]["table"])
    assert {"reason", "raw_line", "loan_id", "occupation_type"} <= set(rejects.columns)


def test_rejected_run_publishes_nothing_and_keeps_the_previous_snapshot(spark, lake_settings, generated_csv, tmp_path):
    first = run_job(spark, lake_settings, generated_csv)
    strict = lake_settings.model_copy(
        update={"features": lake_settings.features.model_copy(update={"max_reject_share": 0.001})}
    )
    with pytest.raises(UserError, match=r"over the limit of 0\.1%.*nothing was published"):
        run_job(spark, strict, generated_csv)
    assert lake.read_current(lake_settings)["run_id"] == first["run_id"]
    snapshots = list((Path(lake_settings.paths.lake) / "credit_risk" / "snapshots").iterdir())
    assert [p.name for p in snapshots] == [first["run_id"]]
    table = first["outputs"]["training"]["table"]
    assert spark.table(table).count() == first["outputs"]["training"]["rows"]


def test_a_write_that_fails_cancels_the_others_and_keeps_the_previous_snapshot(
    spark, lake_settings, generated_csv, monkeypatch
):
    """The three outputs are written as concurrent Spark jobs (job.write_together): one failing stops the run,
    the others are cancelled, and nothing of the new snapshot is left or current."""
    from pyspark.sql import functions as F

    first = run_job(spark, lake_settings, generated_csv)
    written = job.transform.training_features

    def failing_training(loans):
        return written(loans).withColumn("age", F.raise_error(F.lit("disk full (a test)")).cast("int"))

    monkeypatch.setattr(job.transform, "training_features", failing_training)
    with pytest.raises(Exception, match="disk full"):
        run_job(spark, lake_settings, generated_csv)
    assert lake.read_current(lake_settings)["run_id"] == first["run_id"]
    snapshots = list((Path(lake_settings.paths.lake) / "credit_risk" / "snapshots").iterdir())
    assert [p.name for p in snapshots] == [first["run_id"]]
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []  # nothing of the failed run still runs
    assert spark.table(first["outputs"]["latest"]["table"]).count() == first["outputs"]["latest"]["rows"]


def test_rerun_repoints_the_tables_to_the_new_snapshot(spark, lake_settings, generated_csv, tmp_path):
    first = run_job(spark, lake_settings, generated_csv)
    smaller = tmp_path / "smaller.csv"
    raw, truth = generate(rows=3_000, seed=5)
    write(raw, truth, smaller)
    second = run_job(spark, lake_settings, smaller)
    assert second["run_id"] != first["run_id"]
    assert lake.read_current(lake_settings)["run_id"] == second["run_id"]
    assert spark.table(second["outputs"]["training"]["table"]).count() == 3_000
    # The old snapshot stays readable by path for whoever pinned it.
    assert pq.read_table(first["outputs"]["training"]["uri"]).num_rows == first["outputs"]["training"]["rows"]


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "features", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_killed_run_leaves_the_previous_snapshot_current_and_sql_reads_it(generated_csv, tmp_path):
    """Separate processes with their own embedded metastore: run, kill a second run mid-write, query."""
    lake_dir = tmp_path / "lake"
    first = _cli("--input", str(generated_csv), "--lake", str(lake_dir), "--as-of", "2021-06-30")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    current = json.loads((lake_dir / "credit_risk" / "CURRENT.json").read_text())

    second = _cli(
        "--input", str(generated_csv), "--lake", str(lake_dir), "--as-of", "2021-07-31", start_new_session=True
    )
    deadline = time.monotonic() + 240
    snapshots = lake_dir / "credit_risk" / "snapshots"
    while time.monotonic() < deadline:
        partial = [p for p in snapshots.glob("*/training/_SUCCESS") if current["run_id"] not in str(p)]
        if partial:
            break
        time.sleep(0.2)
    else:
        second.kill()
        pytest.fail("the second run never wrote its training output")
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(timeout=30)
    assert json.loads((lake_dir / "credit_risk" / "CURRENT.json").read_text()) == current

    query = _cli("sql", "--lake", str(lake_dir), "SELECT count(*) AS n, max(as_of) AS as_of FROM latest_features")
    out, err = query.communicate(timeout=300)
    assert query.returncode == 0, err
    manifest = json.loads(Path(current["manifest"]).read_text())
    assert out.splitlines() == ["n,as_of", f"{manifest['outputs']['latest']['rows']},2021-06-30"]


def test_missing_required_column_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("loan_id,id,loan_date,birthday,job_start_date,flag_own_car,status\n1,2,2020-01-01,,,Y,0\n")
    proc = _cli("--input", str(bad), "--lake", str(tmp_path / "lake"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "features: error: the input lacks the required column loan_amount" in err
    assert "Traceback" not in err
    assert not (tmp_path / "lake" / "credit_risk" / "CURRENT.json").exists()


def test_missing_java_is_one_line(tmp_path):
    env = {"PATH": "/usr/bin/nonexistent", "JAVA_HOME": ""}
    proc = _cli("--input", "x.csv", "--lake", str(tmp_path), env=env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        "features: error: Java 17 is required by Spark and was not found: install it "
        "(Debian: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
    ]
