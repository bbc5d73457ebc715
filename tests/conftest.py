"""Fixtures shared by the whole suite: one local SparkSession with a real (embedded Derby) Hive metastore."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from configuration.settings import Settings, load_settings

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Hermetic settings: the tracked configuration only, no machine's local.toml or SPARKMAKER_* values.
# (SPARKMAKER_COMPOSE_TESTS is not a setting: it switches on tests/compose/test_cluster.py. Nor is
# SPARKMAKER_TRUST_VENV: without it, the ./start.sh a test runs rebuilds a shared .venv.)
for _name in [
    n
    for n in os.environ
    if n.startswith("SPARKMAKER_") and n not in ("SPARKMAKER_COMPOSE_TESTS", "SPARKMAKER_TRUST_VENV")
]:
    del os.environ[_name]
os.environ["SPARKMAKER_CONFIG"] = str(Path(__file__).resolve().parent.parent / "configuration" / "sparkmaker.toml")


@pytest.fixture(scope="session")
def spark_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spark")


@pytest.fixture(scope="session")
def spark_settings(spark_root: Path) -> Settings:
    """Settings of the shared session: a lake and metastore of its own under a temp folder."""
    return load_settings(
        paths={"lake": str(spark_root / "lake"), "state_dir": str(spark_root / "state")},
        spark={"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        metastore={"kind": "embedded", "derby_dir": str(spark_root / "metastore")},
    )


@pytest.fixture(scope="session")
def spark(spark_settings: Settings):
    """The one SparkSession of the test run (Hive support on, UI off, 2 shuffle partitions)."""
    from features.session import build_session

    session = build_session(spark_settings, "sparkmaker-tests")
    yield session
    session.stop()


@pytest.fixture
def lake_settings(spark_settings: Settings, tmp_path: Path) -> Settings:
    """Settings for one test: its own lake folder and Hive database, the shared metastore."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    return spark_settings.model_copy(
        update={
            "paths": spark_settings.paths.model_copy(update={"lake": str(tmp_path / "lake")}),
            "features": spark_settings.features.model_copy(update={"database": database}),
        }
    )


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not service_reachable("127.0.0.1", 6379):
        pytest.skip("Redis is not running at 127.0.0.1:6379 (start it: redis-server --daemonize yes)")
    return "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    if not service_reachable("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432 (start it: pg_ctlcluster 15 main start)")
    return "postgresql://postgres@127.0.0.1:5432/postgres"
