"""Airflow's metadata on PostgreSQL, as the compose cluster runs it (airflow.database_url with psycopg 3)."""

from __future__ import annotations

import os
import subprocess
import uuid

from configuration.settings import load_settings
from orchestration import runtime

ADMIN = "import sys, psycopg; c = psycopg.connect(sys.argv[1], autocommit=True); c.execute(sys.argv[2])"


def test_airflow_migrates_its_database_on_postgresql(airflow_venv, postgres_dsn, tmp_path):
    name = f"airflow_test_{uuid.uuid4().hex[:10]}"
    python = str(airflow_venv)
    subprocess.run([python, "-c", ADMIN, postgres_dsn, f"CREATE DATABASE {name}"], check=True, timeout=60)
    try:
        url = postgres_dsn.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
        settings = load_settings(airflow={"database_url": url})
        env = {**os.environ, **runtime.airflow_environment(settings, tmp_path / "home")}
        migrated = subprocess.run(
            [str(runtime.AIRFLOW_BIN / "airflow"), "db", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
        check = subprocess.run(
            [str(runtime.AIRFLOW_BIN / "airflow"), "db", "check"], env=env, capture_output=True, text=True, timeout=120
        )
        assert check.returncode == 0, check.stderr[-2000:]
        assert not (tmp_path / "home" / "airflow.db").exists()  # not SQLite
    finally:
        subprocess.run([python, "-c", ADMIN, postgres_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], timeout=60)
