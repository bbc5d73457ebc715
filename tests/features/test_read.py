"""Reading the raw CSV: RFC 4180 quoting, columns by name, extra and missing columns, malformed lines."""

from __future__ import annotations

import pytest

from configuration.errors import UserError
from features import read, validate


def write_csv(tmp_path, text: str) -> str:
    path = tmp_path / "in.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


HEADER = "loan_id,id,loan_date,loan_amount,birthday,job_start_date,flag_own_car,status"


def load(spark, path: str):
    columns = read.read_header(spark, path)
    return columns, read.read_raw(spark, path, columns)


def test_quoted_fields_hold_commas_and_doubled_quotes(spark, tmp_path):
    path = write_csv(
        tmp_path, HEADER + ',occupation_type\n1,5,2020-01-01,100,1990-01-01,2010-01-01,Y,0,"Cook, ""head"" chef"\n'
    )
    _, raw = load(spark, path)
    row = raw.first()
    assert row["occupation_type"] == 'Cook, "head" chef'
    assert row[validate.CORRUPT_COLUMN] is None


def test_columns_are_matched_by_name_in_any_order_with_extra_columns(spark, tmp_path):
    path = write_csv(
        tmp_path,
        "\ufeffStatus, flag_own_car,favourite_colour,job_start_date,birthday,loan_amount,loan_date,id,loan_id\n"
        "1,N,blue,2010-01-01,1990-01-01,250.5,2020-02-02,77,3\n",
    )
    columns, raw = load(spark, path)
    assert columns[:2] == ["status", "flag_own_car"]
    loan = validate.accepted(validate.classify(raw, columns)).first()
    assert (loan["id"], loan["loan_id"], loan["loan_amount"], loan["status"], loan["flag_own_car"]) == (
        77,
        3,
        250.5,
        1,
        0,
    )


def test_extra_column_is_carried_into_rejects(spark, tmp_path):
    path = write_csv(tmp_path, HEADER + ",note\n1,x,2020-01-01,100,,,Y,0,keep me\n")
    columns, raw = load(spark, path)
    reject = validate.rejects(validate.classify(raw, columns), columns).first()
    assert (reject["note"], reject["reason"]) == ("keep me", "bad_id")


def test_a_line_with_the_wrong_number_of_fields_is_rejected_as_malformed(spark, tmp_path):
    path = write_csv(
        tmp_path,
        HEADER
        + "\n1,5,2020-01-01,100,1990-01-01,2010-01-01,Y,0\n2,5,2020-01-01,100\n3,5,2020-01-01,100,1990-01-01,2010-01-01,Y,0,surplus\n",
    )
    columns, raw = load(spark, path)
    rejected = validate.rejects(validate.classify(raw, columns), columns).orderBy("loan_id").collect()
    assert [(r["loan_id"], r["reason"]) for r in rejected] == [("2", "malformed_row"), ("3", "malformed_row")]
    assert rejected[0]["raw_line"] == "2,5,2020-01-01,100"


@pytest.mark.parametrize(
    "header, message",
    [
        ("loan_id,id,loan_date,birthday,job_start_date,flag_own_car,status", "lacks the required column loan_amount"),
        (
            "loan_id,id,loan_date",
            "lacks the required columns loan_amount, birthday, job_start_date, flag_own_car, status",
        ),
        (HEADER + ",id", "names id more than once"),
        (HEADER + ",", "empty column name"),
    ],
)
def test_bad_headers_stop_with_one_line(header, message):
    with pytest.raises(UserError, match=message):
        read.parse_header(header)


def test_empty_and_missing_inputs(spark, tmp_path):
    with pytest.raises(UserError, match="is empty"):
        read.read_header(spark, write_csv(tmp_path, ""))
    with pytest.raises(UserError, match="does not exist"):
        read.read_header(spark, str(tmp_path / "nope.csv"))
