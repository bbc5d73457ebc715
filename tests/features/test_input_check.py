"""The check stage without Spark where Python can do it: a local file's header and sha256 match what Spark reads."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from configuration.errors import UserError
from features import input_check, lake, read
from features.input_check import InputCheck

HEADER = "loan_id,id,loan_date,loan_amount,birthday,job_start_date,flag_own_car,status"

FIRST_LINES = {
    "lf.csv": (HEADER + "\n1,2,2020-01-01,1,,,Y,0\n").encode(),
    "crlf.csv": (HEADER + "\r\n1,2,2020-01-01,1,,,Y,0\r\n").encode(),
    "cr.csv": (HEADER + "\r1,2,2020-01-01,1,,,Y,0\r").encode(),
    "bom.csv": ("\ufeff" + HEADER + "\n").encode(),
    "no_newline.csv": HEADER.encode(),
    "latin1.csv": (HEADER + ",caf\xe9\n").encode("latin-1"),
    "binary.bin": bytes(range(256)) * 4,
    "blank_first_line.csv": b"\n" + HEADER.encode() + b"\n",
}


@pytest.mark.parametrize("name", sorted(FIRST_LINES))
def test_the_first_line_is_what_sparks_text_reader_returns(spark, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(FIRST_LINES[name])
    assert read.first_line(path) == spark.read.text(str(path)).head()[0]


def test_an_empty_file_has_no_first_line_for_either(spark, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert read.first_line(path) is None and spark.read.text(str(path)).head() is None
    with pytest.raises(UserError, match="is empty"):
        InputCheck(str(path))


def test_local_description_matches_hadoops(spark, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes((HEADER + "\n" + "1,2,2020-01-01,1,,,Y,0\n" * 50_000).encode())
    described, columns = InputCheck(str(path)).result(spark)
    assert described == input_check.describe_through_spark(spark, str(path))
    sha256sum = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
    assert described["sha256"] == sha256sum.split()[0]
    assert columns == HEADER.split(",")


def test_a_folder_goes_through_spark(spark, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(2):
        (folder / f"part-{i}.csv").write_text(HEADER + f"\n{i},2,2020-01-01,1,,,Y,0\n")
    described, columns = InputCheck(str(folder)).result(spark)
    digests = [hashlib.sha256((folder / f"part-{i}.csv").read_bytes()).hexdigest() for i in range(2)]
    assert described["files"] == 2
    assert described["sha256"] == hashlib.sha256("\n".join(digests).encode()).hexdigest()
    assert columns == HEADER.split(",")


def test_wrong_local_inputs_fail_before_any_spark(tmp_path):
    with pytest.raises(UserError, match="does not exist: check the --input path"):
        InputCheck(str(tmp_path / "nope.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("loan_id,id\n1,2\n")
    with pytest.raises(UserError, match="lacks the required columns loan_date"):
        InputCheck(str(bad))


def test_parquet_rows_from_footers_match_sparks_count(spark, tmp_path):
    uri = str(tmp_path / "out")
    spark.range(12_345).repartition(3).write.parquet(uri)
    assert lake.parquet_rows(uri, spark) == spark.read.parquet(uri).count() == 12_345
