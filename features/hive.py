"""Registering snapshot Parquet folders as Hive tables in the configured metastore."""

from __future__ import annotations

from pyspark.sql import SparkSession


def _quote(identifier: str) -> str:
    return ".".join(f"`{part}`" for part in identifier.split("."))


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register(spark: SparkSession, database: str, locations: dict[str, str]) -> None:
    """Point each table (db.name -> Parquet folder URI) at its folder, creating what is missing.

    Each table switches in one metastore call: ALTER TABLE ... SET LOCATION when the
    schema is unchanged, so readers never find the table missing; a changed schema (an
    input with other extra columns changes `rejects`) needs DROP and CREATE.
    """
    # Checked first: CREATE DATABASE IF NOT EXISTS on an existing database makes the Hive
    # metastore log a ~95-line AlreadyExistsException (at ERROR) before Spark ignores it.
    if not spark.catalog.databaseExists(database):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(database)}")
    for table, uri in locations.items():
        new_schema = spark.read.parquet(uri).schema
        if spark.catalog.tableExists(table):
            if spark.table(table).schema == new_schema:
                spark.sql(f"ALTER TABLE {_quote(table)} SET LOCATION {_sql_string(uri)}")
                spark.sql(f"REFRESH TABLE {_quote(table)}")
                continue
            spark.sql(f"DROP TABLE {_quote(table)}")
        spark.sql(f"CREATE TABLE {_quote(table)} USING parquet LOCATION {_sql_string(uri)}")
