"""Reading the raw CSV: header check first, then every column as a string with an explicit schema."""

from __future__ import annotations

import csv

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from configuration.errors import UserError, excerpt
from features.contract import REQUIRED_COLUMNS
from features.validate import CORRUPT_COLUMN


MAX_NAMES_SHOWN = 10  # column names quoted in a header error


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_SHOWN])
    more = f" and {len(names) - MAX_NAMES_SHOWN:,} more" if len(names) > MAX_NAMES_SHOWN else ""
    return excerpt(shown, 300) + more


def _binary(line: str) -> bool:
    """Control characters (other than tab) or U+FFFD (a byte that was not UTF-8): not a text header."""
    return "\ufffd" in line or any(not c.isprintable() and c != "\t" for c in line)


def parse_header(line: str) -> list[str]:
    """Column names of a CSV header line: BOM and spaces stripped, lower-cased; duplicates refused.

    Every message quotes at most a short, printable excerpt of the header (a binary file or a
    1 MB header line must not become the message).
    """
    line = line.lstrip("\ufeff")
    if _binary(line):
        raise UserError(
            f"the input's first line is not a CSV header (it holds control characters or bytes that are not UTF-8: "
            f"{excerpt(line, 60)!r}): give a UTF-8 CSV file with a header line"
        )
    try:
        names = next(csv.reader([line]))
    except csv.Error as exc:
        raise UserError(f"the input's header is not CSV ({exc}): {excerpt(line, 60)!r}") from None
    columns = [name.strip().lower() for name in names]
    seen: set[str] = set()
    duplicated = sorted({c for c in columns if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
    if duplicated:
        raise UserError(f"the input header names {_names(duplicated)} more than once: each column must appear once")
    if any(not c for c in columns):
        raise UserError("the input header has an empty column name: name every column")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(
            f"the input lacks the required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            f"its header has {_names(columns)} ({len(columns):,} columns)"
        )
    return columns


def read_header(spark: SparkSession, uri: str) -> list[str]:
    try:
        first = spark.read.text(uri).head()
    except Exception as exc:
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            raise UserError(f"the input {uri} does not exist: check the --input path") from None
        raise
    if first is None:
        raise UserError(f"the input {uri} is empty: it needs a header line and rows")
    return parse_header(first[0])


def raw_schema(columns: list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in columns] + [StructField(CORRUPT_COLUMN, StringType())])


def read_raw(spark: SparkSession, uri: str, columns: list[str]) -> DataFrame:
    """Every line as strings; a line whose field count differs from the header keeps its text in _corrupt_record.

    RFC 4180 quoting: `"` quotes a field, `""` inside it is a literal quote. Empty fields are NULL.
    """
    return spark.read.csv(
        uri,
        schema=raw_schema(columns),
        header=True,
        enforceSchema=True,  # names come from our own header parse; matching is by position after it
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=CORRUPT_COLUMN,
        quote='"',
        escape='"',
        encoding="UTF-8",
    )
