"""Contract section 2 on tiny hand-written frames: every reason, their order, duplicates."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from pyspark.sql import Row

from features import validate

COLUMNS = ["loan_id", "id", "loan_date", "loan_amount", "birthday", "job_start_date", "flag_own_car", "status"]
GOOD = {
    "loan_id": "1",
    "id": "5008804",
    "loan_date": "2019-05-01",
    "loan_amount": "1200.50",
    "birthday": "1980-01-15",
    "job_start_date": "2010-03-01",
    "flag_own_car": "Y",
    "status": "0",
}


def frame(spark, *rows: dict):
    return spark.createDataFrame(
        [Row(**{c: r.get(c) for c in COLUMNS}) for r in rows], schema=", ".join(f"{c} string" for c in COLUMNS)
    )


def reasons(spark, *rows: dict) -> list:
    classified = validate.classify(frame(spark, *rows), COLUMNS)
    return [r[validate.REASON] for r in classified.orderBy("loan_id", "loan_amount").collect()]


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"id": None}, "bad_id"),
        ({"id": "12a"}, "bad_id"),
        ({"id": "5008804.0"}, "bad_id"),
        ({"id": "99999999999999999999"}, "bad_id"),  # over bigint: not an integer we can key on
        ({"loan_id": ""}, "bad_loan_id"),
        ({"loan_id": "x1"}, "bad_loan_id"),
        ({"loan_date": None}, "bad_loan_date"),
        ({"loan_date": "2019-02-30"}, "bad_loan_date"),
        ({"loan_date": "2019-13-01"}, "bad_loan_date"),
        ({"loan_date": "01/05/2019"}, "bad_loan_date"),
        ({"loan_date": "2019-5-1"}, "bad_loan_date"),
        ({"loan_amount": None}, "bad_loan_amount"),
        ({"loan_amount": "abc"}, "bad_loan_amount"),
        ({"loan_amount": "-0.01"}, "bad_loan_amount"),
        ({"loan_amount": "NaN"}, "bad_loan_amount"),
        ({"loan_amount": "Infinity"}, "bad_loan_amount"),
        ({"status": "2"}, "bad_status"),
        ({"status": None}, "bad_status"),
        ({"status": "1.0"}, "bad_status"),
        ({"status": "yes"}, "bad_status"),
    ],
)
def test_each_reason(spark, change, reason):
    assert reasons(spark, {**GOOD, **change}) == [reason]


@pytest.mark.parametrize(
    "change",
    [
        {"birthday": "not a date"},
        {"birthday": None},
        {"job_start_date": "3021-09-18"},
        {"job_start_date": "2019-02-29"},
        {"flag_own_car": "maybe"},
        {"flag_own_car": None},
        {"id": " 5008804 ", "loan_amount": " 0 ", "status": " 1"},  # spaces around values are tolerated
        {"loan_date": "2020-02-29"},
    ],
)
def test_values_that_do_not_reject(spark, change):
    assert reasons(spark, {**GOOD, **change}) == [None]


def test_rules_are_checked_in_contract_order(spark):
    everything_wrong = {"loan_id": "x", "id": "y", "loan_date": "z", "loan_amount": "-1", "status": "7"}
    assert reasons(spark, {**GOOD, **everything_wrong}) == ["bad_id"]
    assert reasons(spark, {**GOOD, **everything_wrong, "id": "1"}) == ["bad_loan_id"]
    assert reasons(spark, {**GOOD, "loan_amount": "-1", "status": "7"}) == ["bad_loan_amount"]


def test_exact_copies_keep_one_row(spark):
    classified = validate.classify(frame(spark, GOOD, GOOD, GOOD), COLUMNS)
    rows = classified.collect()
    assert [r[validate.REASON] for r in rows] == [None, None, None]
    assert sorted(r[validate.DROPPED_COPY] for r in rows) == [False, True, True]
    assert validate.accepted(classified).count() == 1


def test_differing_rows_of_one_loan_id_are_all_rejected(spark):
    other = {**GOOD, "loan_amount": "99"}
    copies_and_other = [GOOD, GOOD, other]
    assert reasons(spark, *copies_and_other) == ["duplicate_loan_id"] * 3
    # a difference in an optional column counts too, a NULL against a value included
    assert reasons(spark, GOOD, {**GOOD, "birthday": None}) == ["duplicate_loan_id"] * 2


def test_duplicate_check_ignores_rows_already_rejected(spark):
    broken_twin = {**GOOD, "status": "9"}
    assert Counter(reasons(spark, GOOD, broken_twin)) == Counter([None, "bad_status"])


def test_loan_ids_compare_as_integers(spark):
    # "007" and "7" are the same loan; their rows differ as read, so both are rejected
    assert reasons(spark, {**GOOD, "loan_id": "7"}, {**GOOD, "loan_id": "007"}) == ["duplicate_loan_id"] * 2


def test_accepted_rows_are_typed(spark):
    row = validate.accepted(validate.classify(frame(spark, GOOD), COLUMNS)).first()
    assert row.asDict() == {
        "id": 5008804,
        "loan_id": 1,
        "loan_date": dt.date(2019, 5, 1),
        "loan_amount": 1200.5,
        "birthday": dt.date(1980, 1, 15),
        "job_start_date": dt.date(2010, 3, 1),
        "flag_own_car": 1,
        "status": 0,
    }


def test_rejects_keep_the_original_strings(spark):
    odd = {**GOOD, "loan_amount": " -5,00 ", "status": "0"}
    rejected = validate.rejects(validate.classify(frame(spark, odd), COLUMNS), COLUMNS).first().asDict()
    assert rejected == {**odd, "raw_line": None, "reason": "bad_loan_amount"}


DATE_TEXTS = [
    "2019-05-01",
    " 2019-05-01 ",
    "2019-02-30",
    "2019-02-29",
    "2020-02-29",
    "1900-02-29",
    "2000-02-29",
    "2019-13-01",
    "2019-00-10",
    "2019-01-00",
    "2019-04-31",
    "0001-01-01",
    "9999-12-31",
    "1582-10-10",
    "2019-5-1",
    "20190501",
    "2019/05/01",
    "2019-05-01T00:00",
    "2019-05-01\n",
    "2019-05-01\r",
    "\t2019-05-01",
    "+2019-05-01",
    "２０１９-05-01",
    "",
    "  ",
    None,
]


def python_date(text: str | None) -> dt.date | None:
    """The contract's rule by hand: spaces around, then exactly YYYY-MM-DD in ASCII digits, a real calendar date."""
    if text is None:
        return None
    text = text.strip(" ")
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return None
    digits = text[:4] + text[5:7] + text[8:]
    if not (digits.isascii() and digits.isdigit()):
        return None
    try:
        return dt.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return None


def test_dates_parse_as_the_python_calendar_reads_them(spark):
    frame = spark.createDataFrame([(t,) for t in DATE_TEXTS], "text string")
    got = frame.select("text", validate.parse_date(frame["text"]).alias("date")).collect()
    assert {r["text"]: r["date"] for r in got} == {t: python_date(t) for t in DATE_TEXTS}
