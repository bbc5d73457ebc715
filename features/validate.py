"""Contract section 2: classify every raw row as accepted, rejected (with a reason) or a dropped exact copy.

Pure DataFrame -> DataFrame functions. They never raise on a bad value, so they run
unchanged under Spark 4's ANSI mode: every parse is a `try_` function or a regex test.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.contract import REJECT_REASONS

CORRUPT_COLUMN = "_corrupt_record"
REASON = "reason"
DROPPED_COPY = "_dropped_copy"
DUPLICATE = "duplicate_loan_id"  # the one reason decided across rows (duplicate_verdicts), not row by row

_INTEGER = r"^[+-]?[0-9]+$"
# \z, not $: Java's $ also matches before a final line break.
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\z"


def parse_integer(raw: Column) -> Column:
    """An integer written in decimal digits (surrounding spaces allowed), else NULL. `1.0` is not an integer."""
    text = F.trim(raw)
    return F.when(text.rlike(_INTEGER), text.try_cast("bigint"))


def parse_date(raw: Column) -> Column:
    """A real calendar date written YYYY-MM-DD, else NULL (`2019-02-30` is NULL).

    Once the shape is checked, Spark's own string-to-date cast reads it: the same dates as
    `try_to_date(text, "yyyy-MM-dd")`, without a formatter per value (half the CPU of the three
    date columns, ~5 s of the job at 7.8 M rows)."""
    text = F.trim(raw)
    return F.when(text.rlike(_ISO_DATE), text.try_cast("date"))


def parse_amount(raw: Column) -> Column:
    """A finite number, else NULL (NaN and infinities are not amounts)."""
    value = F.trim(raw).try_cast("double")
    return F.when(~F.isnan(value) & (F.abs(value) != float("inf")), value)


def parse_flag(raw: Column) -> Column:
    """`Y` -> 1, `N` -> 0, anything else NULL."""
    text = F.trim(raw)
    return F.when(text == "Y", 1).when(text == "N", 0).cast("int")


UNDECODABLE = "_undecodable"
# Spark reads a byte that is not UTF-8 (a latin-1 "é") as U+FFFD. The contract keeps such rows
# row for row (the character is in a free-text column more often than not): they are counted
# in the manifest (`undecodable_rows`), not rejected.
REPLACEMENT_CHARACTER = "\ufffd"


def undecodable(columns: list[str]) -> Column:
    """True when any of the row's raw strings holds U+FFFD, the mark of a byte that was not UTF-8."""
    return F.coalesce(F.concat_ws("", *[F.col(c) for c in columns]).contains(REPLACEMENT_CHARACTER), F.lit(False))


def with_parsed_columns(raw: DataFrame) -> DataFrame:
    """Add the typed columns the rules and the features need, prefixed `_`, beside the raw strings."""
    return raw.select(
        "*",
        undecodable(raw.columns).alias(UNDECODABLE),
        parse_integer(F.col("id")).alias("_id"),
        parse_integer(F.col("loan_id")).alias("_loan_id"),
        parse_date(F.col("loan_date")).alias("_loan_date"),
        parse_amount(F.col("loan_amount")).alias("_loan_amount"),
        F.trim(F.col("status")).alias("_status_text"),
        parse_date(F.col("birthday")).alias("_birthday"),
        parse_date(F.col("job_start_date")).alias("_job_start_date"),
        parse_flag(F.col("flag_own_car")).alias("_flag_own_car"),
    )


def with_row_reason(parsed: DataFrame) -> DataFrame:
    """The first row-level rule a row breaks (contract order), or NULL."""
    malformed = F.col(CORRUPT_COLUMN).isNotNull() if CORRUPT_COLUMN in parsed.columns else F.lit(False)
    reason = (
        F.when(malformed, "malformed_row")
        .when(F.col("_id").isNull(), "bad_id")
        .when(F.col("_loan_id").isNull(), "bad_loan_id")
        .when(F.col("_loan_date").isNull(), "bad_loan_date")
        .when(F.col("_loan_amount").isNull() | (F.col("_loan_amount") < 0), "bad_loan_amount")
        .when(~F.coalesce(F.col("_status_text").isin("0", "1"), F.lit(False)), "bad_status")
    )
    return parsed.withColumn(REASON, reason).withColumn("_status", F.col("_status_text").try_cast("int"))


def duplicate_verdicts(rows: DataFrame, raw_columns: list[str]) -> DataFrame:
    """One row per loan_id repeated among the rows that passed the row-level rules:
    `_loan_id`, `_kept_row` (the `_row_id` of the copy to keep), `_copies` (its rows) and `_differs`.

    Most loan ids occur once, so the rows are never shuffled by loan_id: a count per
    loan_id (a shuffle of two longs per row) finds the repeated ones, and only their few
    rows are compared exactly as read.
    """
    passed = rows.where(F.col(REASON).isNull())
    repeated = (
        passed.groupBy("_loan_id")
        .agg(F.count(F.lit(1)).alias("_copies"), F.min("_row_id").alias("_kept_row"))
        .where(F.col("_copies") > 1)
    )
    as_read = F.struct(*[F.col(c) for c in raw_columns])
    return (
        passed.join(F.broadcast(repeated), "_loan_id")
        .groupBy("_loan_id", "_kept_row", "_copies")
        .agg((~F.min(as_read).eqNullSafe(F.max(as_read))).alias("_differs"))
    )


def apply_duplicate_verdicts(rows: DataFrame, verdicts: DataFrame) -> DataFrame:
    """Reject every row of a loan_id whose rows differ; mark all but one of exact copies as dropped."""
    joined = rows.join(F.broadcast(verdicts), "_loan_id", "left")
    in_group = F.col(REASON).isNull() & F.col("_differs").isNotNull()
    return joined.select(
        *[c for c in rows.columns if c != REASON],
        F.when(in_group & F.col("_differs"), F.lit(DUPLICATE)).otherwise(F.col(REASON)).alias(REASON),
        (in_group & ~F.col("_differs") & (F.col("_row_id") != F.col("_kept_row"))).alias(DROPPED_COPY),
    )


def row_level_counts() -> list[Column]:
    """Aggregates of the row-checked rows (row_checked): all rows, rows holding U+FFFD, and one count per
    row-level reason. With duplicate_counts, they are every count of the manifest, without a pass of their own
    over the rows: the job observes them on the write that stages the rows."""
    return [
        F.count(F.lit(1)).alias("rows_in"),
        F.count_if(F.col(UNDECODABLE)).alias("undecodable_rows"),
        *[F.count_if(F.col(REASON) == reason).alias(reason) for reason in REJECT_REASONS if reason != DUPLICATE],
    ]


def duplicate_counts(verdicts: DataFrame) -> tuple[int, int]:
    """(rows rejected as duplicate_loan_id, exact copies dropped) from duplicate_verdicts: every row of a loan_id
    whose rows differ is rejected; of identical rows, all but the kept one are dropped."""
    (row,) = verdicts.agg(  # a global aggregate: always exactly one row
        F.sum(F.when(F.col("_differs"), F.col("_copies"))).alias("rejected"),
        F.sum(F.when(~F.col("_differs"), F.col("_copies") - 1)).alias("dropped"),
    ).collect()
    return int(row["rejected"] or 0), int(row["dropped"] or 0)


def with_duplicate_resolution(rows: DataFrame, raw_columns: list[str]) -> DataFrame:
    """Both duplicate steps at once (needs the `_row_id` of `with_row_id`)."""
    return apply_duplicate_verdicts(rows, duplicate_verdicts(rows, raw_columns))


def with_row_id(rows: DataFrame) -> DataFrame:
    """A unique id per row, fixed once the rows are written (the job stages them before resolving duplicates)."""
    return rows.withColumn("_row_id", F.monotonically_increasing_id())


def row_checked(raw: DataFrame) -> DataFrame:
    """Raw string rows -> typed `_` columns, the row-level `reason` and a `_row_id`: no shuffle."""
    return with_row_id(with_row_reason(with_parsed_columns(raw)))


def classify(raw: DataFrame, raw_columns: list[str]) -> DataFrame:
    """Raw string rows -> the same rows with typed `_` columns, `reason` and `_dropped_copy`."""
    return with_duplicate_resolution(row_checked(raw), raw_columns)


def accepted(classified: DataFrame) -> DataFrame:
    """The accepted loans, typed, one row per loan_id."""
    return classified.where(F.col(REASON).isNull() & ~F.col(DROPPED_COPY)).select(
        F.col("_id").alias("id"),
        F.col("_loan_id").alias("loan_id"),
        F.col("_loan_date").alias("loan_date"),
        F.col("_loan_amount").alias("loan_amount"),
        F.col("_birthday").alias("birthday"),
        F.col("_job_start_date").alias("job_start_date"),
        F.col("_flag_own_car").alias("flag_own_car"),
        F.col("_status").alias("status"),
    )


def rejects(classified: DataFrame, raw_columns: list[str]) -> DataFrame:
    """The rejected rows with their original values as strings, the whole line when it was malformed, and the reason."""
    line = F.col(CORRUPT_COLUMN) if CORRUPT_COLUMN in classified.columns else F.lit(None).cast("string")
    return classified.where(F.col(REASON).isNotNull()).select(*raw_columns, line.alias("raw_line"), REASON)
