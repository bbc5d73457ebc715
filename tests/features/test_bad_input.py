"""Inputs that made the feature job noisy or misleading (issue 13, items 11, 12 and 14)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from configuration.errors import UserError
from configuration.settings import REPO_ROOT
from features import job, read
from features.progress import Progress

HEADER = "loan_id,id,loan_date,loan_amount,birthday,job_start_date,flag_own_car,status"
ROWS = [
    "1,5008804,2020-01-01,100,1990-01-01,2010-01-01,Y,0",
    "2,5008804,2020-02-01,200,1990-01-01,2010-01-01,Y,0",
    "3,5008805,2020-03-01,300,1985-05-05,2012-01-01,N,1",
]


def run_job(spark, settings, path) -> dict:
    params = job.JobParams(input_uri=str(path), as_of=__import__("datetime").date(2021, 1, 1))
    return job.run(spark, settings, params, Progress("test", stream=open(os.devnull, "w")))


# Item 12: header excerpts ---------------------------------------------------------------------------------
def test_a_huge_header_is_quoted_as_a_short_excerpt():
    header = ",".join(f"column_{i:06d}" for i in range(80_000))  # ~1 MB, no required column
    with pytest.raises(UserError) as caught:
        read.parse_header(header)
    message = str(caught.value)
    assert len(message) < 600 and "\n" not in message
    assert message.startswith("the input lacks the required columns loan_id, id, loan_date")
    assert "column_000000" in message and "80,000 columns" in message


def test_a_binary_header_is_printable_in_the_message(tmp_path, spark):
    path = tmp_path / "in.bin"
    path.write_bytes(bytes(range(256)) * 40 + b"\n" + b"\x00\x01\x02" * 100)
    with pytest.raises(UserError) as caught:
        read.read_header(spark, str(path))
    message = str(caught.value)
    assert len(message) < 600
    assert message.isprintable(), repr(message)
    assert "not a CSV header" in message or "lacks the required columns" in message


def test_a_header_with_nul_bytes_is_one_line_not_a_csv_error():
    with pytest.raises(UserError) as caught:
        read.parse_header("loan_id,\x00id,loan_date")
    assert str(caught.value).isprintable()


def test_many_duplicated_names_are_listed_briefly():
    header = ",".join([HEADER] + [f"x{i},x{i}" for i in range(5000)])
    with pytest.raises(UserError) as caught:
        read.parse_header(header)
    assert len(str(caught.value)) < 600 and "more than once" in str(caught.value)


# Item 14: bytes that are not UTF-8 -------------------------------------------------------------------------
def test_rows_with_bytes_that_are_not_utf8_are_counted_in_the_manifest(spark, lake_settings, tmp_path):
    path = tmp_path / "latin1.csv"
    lines = [HEADER + ",occupation_type"] + [
        ROWS[0] + ",Caf\xe9 owner",
        ROWS[1] + ",Cook",
        ROWS[2] + ",Ma\xeetre d'h\xf4tel",
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    manifest = run_job(spark, lake_settings, path)
    # Hand-counted: rows 1 and 3 hold a latin-1 byte (0xe9; 0xee and 0xf4); the rows stay as the contract says.
    assert manifest["undecodable_rows"] == 2
    assert manifest["rows_in"] == 3 and manifest["rows_accepted"] == 3


def test_a_clean_file_counts_no_undecodable_rows(spark, lake_settings, tmp_path):
    path = tmp_path / "clean.csv"
    path.write_text(
        "\n".join([HEADER + ",occupation_type", ROWS[0] + ",Café owner", *(r + ",Cook" for r in ROWS[1:])]) + "\n",
        encoding="utf-8",
    )
    manifest = run_job(spark, lake_settings, path)
    assert manifest["undecodable_rows"] == 0 and manifest["rows_accepted"] == 3


# Item 11: no Java stack trace on a second run -------------------------------------------------------------------
SECOND_RUN = "=== second run ==="
TWO_RUNS = f"""
import datetime, sys
from configuration.settings import load_settings
from features import job, session
settings = load_settings()
spark = session.build_session(settings, "robustness-two-runs")
params = job.JobParams(input_uri=sys.argv[1], as_of=datetime.date(2021, 1, 1))
job.run(spark, settings, params)
print({SECOND_RUN!r}, file=sys.stderr, flush=True)
job.run(spark, settings, params)
spark.stop()
"""


@pytest.mark.slow
def test_a_second_run_against_an_existing_database_prints_no_java_stack_trace(tmp_path):
    """A process of its own (its JVM's stderr is its own), two runs on one session: the second finds the database."""
    path = tmp_path / "in.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKMAKER_") or k == "SPARKMAKER_CONFIG"}
    env.update(
        {
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARKMAKER_PATHS__LAKE": str(tmp_path / "lake"),
            "SPARKMAKER_PATHS__STATE_DIR": str(tmp_path / "state"),
            "SPARKMAKER_METASTORE__KIND": "embedded",
            "SPARKMAKER_METASTORE__DERBY_DIR": str(tmp_path / "metastore"),
            "SPARKMAKER_SPARK__MASTER": "local[1]",
        }
    )
    run = subprocess.run(
        [sys.executable, "-c", TWO_RUNS, str(path)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    second = run.stderr.split(SECOND_RUN, 1)[1]
    assert "publish done" in second  # the second run really ran
    assert "AlreadyExistsException" not in second, second[:3000]
    assert "\tat " not in second and "Exception" not in second, second[:3000]
