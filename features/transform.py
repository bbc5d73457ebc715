"""Contract sections 3 and 4: point-in-time features of accepted loans.

Pure functions of DataFrames and Columns; nothing here looks at the clock. The input of
both tables is `validate.accepted(...)`: id, loan_id, loan_date, loan_amount, birthday,
job_start_date, flag_own_car, status.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.contract import LATEST_COLUMNS, TRAINING_COLUMNS


def completed_years(start: Column, end: Column) -> Column:
    """Whole years from `start` to `end`; NULL when either is NULL or `start` is after `end`.

    year(end) - year(start), minus one when (month, day) of `end` comes before that of
    `start`. A 29 February start therefore completes its year on 1 March in common years.
    """
    before_anniversary = (F.month(end) < F.month(start)) | (
        (F.month(end) == F.month(start)) & (F.dayofmonth(end) < F.dayofmonth(start))
    )
    years = F.year(end) - F.year(start) - F.when(before_anniversary, 1).otherwise(0)
    return F.when(start.isNotNull() & end.isNotNull() & (start <= end), years).cast("int")


def training_features(loans: DataFrame) -> DataFrame:
    """One row per accepted loan with its features as of its own loan_date.

    A range frame over the loan day that ends one day before the current row counts
    exactly the loans dated strictly earlier, so loans on the same day never see
    each other, whatever their order.
    """
    earlier = Window.partitionBy("id").orderBy(F.unix_date("loan_date")).rangeBetween(Window.unboundedPreceding, -1)
    return loans.select(
        "id",
        "loan_id",
        "loan_date",
        F.count("loan_amount").over(earlier).cast("int").alias("nb_previous_loans"),
        F.avg("loan_amount").over(earlier).alias("avg_amount_loans_previous"),
        completed_years(F.col("birthday"), F.col("loan_date")).alias("age"),
        completed_years(F.col("job_start_date"), F.col("loan_date")).alias("years_on_the_job"),
        F.col("flag_own_car").cast("int").alias("flag_own_car"),
        F.col("status").cast("int").alias("status"),
    ).select(*TRAINING_COLUMNS)


def latest_features(loans: DataFrame, as_of: dt.date) -> DataFrame:
    """One row per customer with a loan before `as_of`: the features of a new application on `as_of`.

    Counts and averages use every such loan; age, years on the job and the car flag come
    from the most recent one (latest loan_date, then highest loan_id).
    """
    as_of_col = F.lit(as_of).cast("date")
    most_recent = F.max_by(F.struct("birthday", "job_start_date", "flag_own_car"), F.struct("loan_date", "loan_id"))
    per_customer = (
        loans.where(F.col("loan_date") < as_of_col)
        .groupBy("id")
        .agg(
            F.count("loan_amount").cast("int").alias("nb_previous_loans"),
            F.avg("loan_amount").alias("avg_amount_loans_previous"),
            most_recent.alias("_recent"),
        )
    )
    return per_customer.select(
        "id",
        as_of_col.alias("as_of"),
        "nb_previous_loans",
        "avg_amount_loans_previous",
        completed_years(F.col("_recent.birthday"), as_of_col).alias("age"),
        completed_years(F.col("_recent.job_start_date"), as_of_col).alias("years_on_the_job"),
        F.col("_recent.flag_own_car").cast("int").alias("flag_own_car"),
    ).select(*LATEST_COLUMNS)
