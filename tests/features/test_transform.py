"""Contract sections 3 and 4 on tiny frames whose answers are worked out by hand in the comments."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from features.contract import LATEST_COLUMNS, TRAINING_COLUMNS
from features.transform import completed_years, latest_features, training_features

D = dt.date
SCHEMA = "id long, loan_id long, loan_date date, loan_amount double, birthday date, job_start_date date, flag_own_car int, status int"


def loans(spark, *rows):
    return spark.createDataFrame(list(rows), SCHEMA)


def by_loan(frame) -> dict:
    return {r["loan_id"]: r.asDict() for r in frame.collect()}


@pytest.mark.parametrize(
    "start, end, years",
    [
        (D(1990, 5, 10), D(2020, 5, 9), 29),  # the day before the anniversary
        (D(1990, 5, 10), D(2020, 5, 10), 30),  # on the anniversary
        (D(1990, 5, 10), D(2020, 4, 30), 29),  # an earlier month
        (D(1992, 2, 29), D(2021, 2, 28), 28),  # leap-day birthday, common year: (2,28) < (2,29)
        (D(1992, 2, 29), D(2021, 3, 1), 29),
        (D(1992, 2, 29), D(2024, 2, 29), 32),
        (D(2020, 1, 1), D(2020, 1, 1), 0),
        (D(2020, 1, 2), D(2020, 1, 1), None),  # after the date: NULL
        (D(3021, 9, 18), D(2020, 1, 1), None),  # the 365243-days sentinel
        (None, D(2020, 1, 1), None),
    ],
)
def test_completed_years(spark, start, end, years):
    row = (
        spark.createDataFrame([(start, end)], "s date, e date").select(completed_years(F.col("s"), F.col("e"))).first()
    )
    assert row[0] == years


def test_previous_loans_are_strictly_earlier_and_ties_do_not_count_each_other(spark):
    frame = training_features(
        loans(
            spark,
            (1, 10, D(2020, 1, 1), 100.0, D(1990, 6, 1), D(2015, 1, 1), 1, 0),
            (1, 11, D(2020, 1, 1), 300.0, D(1990, 6, 1), D(2015, 1, 1), 1, 0),  # same day as 10
            (1, 12, D(2020, 3, 1), 50.0, D(1990, 6, 1), D(2015, 1, 1), 1, 1),
            (1, 13, D(2020, 3, 1), 70.0, D(1990, 6, 1), D(2015, 1, 1), 1, 0),  # same day as 12
            (1, 14, D(2020, 7, 1), 10.0, D(1990, 6, 1), D(2015, 1, 1), 1, 0),
            (2, 20, D(2020, 2, 1), 999.0, D(1990, 6, 1), D(2015, 1, 1), 0, 0),  # another customer, never mixed in
        )
    )
    assert frame.columns == list(TRAINING_COLUMNS)
    rows = by_loan(frame)
    assert [(rows[i]["nb_previous_loans"], rows[i]["avg_amount_loans_previous"]) for i in (10, 11, 12, 13, 14, 20)] == [
        (0, None),
        (0, None),
        (2, 200.0),
        (2, 200.0),
        (4, 130.0),
        (0, None),
    ]


def test_a_customer_whose_loans_all_share_one_day(spark):
    rows = by_loan(
        training_features(loans(spark, *[(7, i, D(2019, 9, 9), 10.0 * i, None, None, None, 0) for i in range(1, 5)]))
    )
    assert {r["nb_previous_loans"] for r in rows.values()} == {0}
    assert {r["avg_amount_loans_previous"] for r in rows.values()} == {None}


def test_ages_and_job_years_as_of_each_loan(spark):
    rows = by_loan(
        training_features(
            loans(
                spark,
                (1, 1, D(2021, 2, 28), 1.0, D(1992, 2, 29), D(3021, 9, 18), None, 0),  # leap birthday, sentinel job
                (1, 2, D(2021, 3, 1), 1.0, D(1992, 2, 29), D(2021, 3, 2), 0, 1),  # job starts the next day
                (1, 3, D(2022, 3, 1), 1.0, D(2030, 1, 1), D(2021, 3, 2), 1, 0),  # birthday in the future
            )
        )
    )
    assert [(rows[i]["age"], rows[i]["years_on_the_job"], rows[i]["flag_own_car"]) for i in (1, 2, 3)] == [
        (28, None, None),
        (29, None, 0),
        (None, 0, 1),
    ]


def test_latest_features_use_loans_before_as_of_and_the_most_recent_loan(spark):
    frame = latest_features(
        loans(
            spark,
            (1, 5, D(2020, 1, 1), 100.0, D(1980, 1, 1), D(2010, 1, 1), 0, 0),
            (
                1,
                9,
                D(2020, 6, 1),
                200.0,
                D(1980, 1, 1),
                D(2012, 6, 1),
                1,
                0,
            ),  # most recent: same day, higher loan_id wins
            (1, 7, D(2020, 6, 1), 300.0, D(1981, 1, 1), D(2011, 1, 1), 0, 0),
            (1, 8, D(2020, 7, 1), 900.0, D(1982, 1, 1), D(2019, 1, 1), 0, 0),  # on as_of: not before it
            (2, 1, D(2020, 7, 2), 50.0, D(1970, 1, 1), None, 1, 0),  # only after as_of: absent
        ),
        D(2020, 7, 1),
    )
    assert frame.columns == list(LATEST_COLUMNS)
    assert [r.asDict() for r in frame.collect()] == [
        {
            "id": 1,
            "as_of": D(2020, 7, 1),
            "nb_previous_loans": 3,
            "avg_amount_loans_previous": 200.0,
            "age": 40,
            "years_on_the_job": 8,
            "flag_own_car": 1,
        }
    ]


def test_features_describe_the_loan_date_and_as_of_not_the_day_the_job_runs(spark):
    """Loans of 2000: a feature computed against the day the job runs (the original notebook's leak) would say
    26 or more years; the contract's answers, worked by hand, are as of the loan date and as of `as_of`."""
    rows = loans(
        spark,
        (1, 1, D(2000, 6, 15), 100.0, D(1980, 6, 16), D(1999, 6, 15), 1, 0),  # the day before the 20th birthday: 19
        (1, 2, D(2000, 6, 16), 300.0, D(1980, 6, 16), D(1999, 6, 15), 1, 0),  # on it: 20; one year on the job
    )
    training = by_loan(training_features(rows))
    assert [(training[i]["age"], training[i]["years_on_the_job"]) for i in (1, 2)] == [(19, 1), (20, 1)]
    (latest,) = latest_features(rows, D(2001, 1, 1)).collect()
    # As of 2001-01-01: 20 (birthday in June), 1 year on the job (since 1999-06-15), both loans before it.
    assert (
        latest["age"],
        latest["years_on_the_job"],
        latest["nb_previous_loans"],
        latest["avg_amount_loans_previous"],
    ) == (20, 1, 2, 200.0)
    # The same rows computed with the session's clock and time zone moved give the same answers.
    zone = spark.conf.get("spark.sql.session.timeZone")
    try:
        spark.conf.set("spark.sql.session.timeZone", "Pacific/Kiritimati")  # UTC+14: "today" is another day there
        assert by_loan(training_features(rows)) == training
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
