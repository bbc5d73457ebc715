"""Reading the raw CSV: header check first, then every column as a string with an explicit schema."""

from __future__ import annotations

import csv
from pathlib import Path

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


# Files Spark's text reader would decompress (Hadoop picks the codec by the name's ending): their
# header goes through Spark. Any other single local file is read here, without a Spark job.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst", ".zstd", ".xz", ".br")
# A header longer than this is not a header; reading further would only fill memory (a binary file).
MAX_HEADER_BYTES = 16 * 2**20


def local_plain_file(uri: str) -> Path | None:
    """The path of a single, uncompressed local file (a plain path or file://), else None."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://"))
    if path.suffix.lower() in COMPRESSED_SUFFIXES or not path.is_file():
        return None
    return path


def first_line(path: Path) -> str | None:
    """The first line as Spark's text reader returns it: UTF-8 with U+FFFD for bad bytes, any of \\n, \\r\\n, \\r
    ending it; None for an empty file."""
    # utf-8-sig: a byte order mark opening the file is dropped, as Hadoop's line reader drops it.
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as handle:
        line = handle.readline(MAX_HEADER_BYTES)
    if not line:
        return None
    return line.rstrip("\n")


def local_header(path: Path, uri: str) -> list[str]:
    """read_header of a local plain file, without Spark."""
    try:
        line = first_line(path)
    except OSError as exc:
        raise UserError(f"cannot read the input {uri}: {exc.strerror}") from None
    if line is None:
        raise UserError(f"the input {uri} is empty: it needs a header line and rows")
    return parse_header(line)


def read_header(spark: SparkSession, uri: str) -> list[str]:
    """The input's column names (parse_header), from its first line."""
    path = local_plain_file(uri)
    if path is not None:
        return local_header(path, uri)
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
