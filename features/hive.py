"""Registering snapshot Parquet folders as Hive tables in the configured metastore."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pyspark.sql import SparkSession
from pyspark.sql.types import StructType


def _quote(identifier: str) -> str:
    return ".".join(f"`{part}`" for part in identifier.split("."))


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register(
    spark: SparkSession, database: str, locations: dict[str, str], schemas: dict[str, StructType] | None = None
) -> None:
    """Point each table (db.name -> Parquet folder URI) at its folder, creating what is missing.

    Each table switches in one metastore call: ALTER TABLE ... SET LOCATION when the
    schema is unchanged, so readers never find the table missing; a changed schema (an
    input with other extra columns changes `rejects`) needs DROP and CREATE. schemas: the
    folders' schemas as Spark reads them, when the caller knows them (else each is read).
    """
    # Checked first: CREATE DATABASE IF NOT EXISTS on an existing database makes the Hive
    # metastore log a ~95-line AlreadyExistsException (at ERROR) before Spark ignores it.
    if not spark.catalog.databaseExists(database):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(database)}")
    for table, uri in locations.items():
        new_schema = schemas[table] if schemas and table in schemas else spark.read.parquet(uri).schema
        if spark.catalog.tableExists(table):
            if spark.table(table).schema == new_schema:
                # No REFRESH TABLE after it: SET LOCATION drops this session's cached relation itself
                # (checked: a table read before the ALTER counts the new folder's rows after it), and
                # other processes' caches are theirs to refresh.
                spark.sql(f"ALTER TABLE {_quote(table)} SET LOCATION {_sql_string(uri)}")
                continue
            spark.sql(f"DROP TABLE {_quote(table)}")
        spark.sql(f"CREATE TABLE {_quote(table)} USING parquet LOCATION {_sql_string(uri)}")


class Warmup:
    """The metastore client started in a thread while the job computes, so publishing finds it ready.

    The first catalog call of a process starts the Hive client: Hive and DataNucleus classes,
    the Derby boot or the Thrift connection (~8 CPU seconds, ~10 s on a quiet machine). Nothing
    the job computes needs it before publishing, so it runs beside the check and classify stages.
    It only reads (the database and the tables' schemas), the same calls `register` makes:
    nothing a reader sees changes before publishing. A metastore that cannot be opened (an
    embedded Derby locked by another process) fails the run at the next stage boundary
    (`check`) instead of after all the work.
    """

    def __init__(self, spark: SparkSession, database: str, tables: Iterable[str]) -> None:
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(spark, database, list(tables)), name="metastore-warmup", daemon=True
        )
        self._thread.start()

    def _run(self, spark: SparkSession, database: str, tables: list[str]) -> None:
        try:
            if spark.catalog.databaseExists(database):
                for table in tables:
                    if spark.catalog.tableExists(table):
                        spark.table(table).schema  # noqa: B018  # loads the table's metadata and SerDe classes
        except BaseException as exc:  # raised in the job's thread by check() or wait()
            self._failure = exc

    def check(self) -> None:
        """Raise the warm-up's failure, if it failed already; never waits."""
        if self._failure is not None:
            raise self._failure

    def wait(self) -> None:
        self._thread.join()
        self.check()

    def join(self) -> None:
        """Wait for the warm-up to end, without raising its failure (for a caller already failing)."""
        self._thread.join()
