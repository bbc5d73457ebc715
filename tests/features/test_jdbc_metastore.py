"""The Hive metastore kept in PostgreSQL: the metastore service creates the schema and serves it
(metastore.kind = thrift), then Spark opens the same database directly (metastore.kind = jdbc)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from configuration.settings import REPO_ROOT
from features.sample_data import generate, write
from tests.features.test_metastore_service import free_port, start_metastore

DRIVER = Path("/usr/share/java/postgresql.jar")


@pytest.fixture
def metastore_database(postgres_dsn):
    if not DRIVER.exists():
        pytest.skip(f"the PostgreSQL JDBC driver {DRIVER} is missing (apt-get install -y libpostgresql-jdbc-java)")
    import psycopg

    name = f"hms_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"jdbc:postgresql://127.0.0.1:5432/{name}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.slow
def test_postgresql_metastore_through_the_service_then_directly(metastore_database, tmp_path):
    csv = tmp_path / "loans.csv"
    raw, truth = generate(3_000, seed=23)
    write(raw, truth, csv)
    lake = str(tmp_path / "lake")
    base = {
        **os.environ,
        "SPARKMAKER_METASTORE__JDBC_URL": metastore_database,
        "SPARKMAKER_METASTORE__JDBC_USER": "postgres",
        "SPARKMAKER_FEATURES__MATERIALIZE": "false",
        "SPARKMAKER_PATHS__STATE_DIR": str(tmp_path / "state"),
    }

    def features(env: dict, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "features", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    port = free_port()
    service = start_metastore(base, lake, port)
    try:
        through_service = {
            **base,
            "SPARKMAKER_METASTORE__KIND": "thrift",
            "SPARKMAKER_METASTORE__URIS": f"thrift://127.0.0.1:{port}",
        }
        run = features(through_service, "--input", str(csv), "--lake", lake, "--as-of", "2021-09-18")
        assert run.returncode == 0, run.stderr
    finally:
        service.terminate()
        service.wait(timeout=60)

    direct = {**base, "SPARKMAKER_METASTORE__KIND": "jdbc"}
    query = features(direct, "sql", "--lake", lake, "SELECT count(*) AS n FROM training_features")
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["n", "3000"]
    assert not (tmp_path / "lake" / "_metastore" / "metastore_db").exists()  # nothing went to Derby
