"""The lifecycle under Airflow: dag.test() of credit_risk_lifecycle on generated data, every task the
project's real CLI (`python -m pipeline step ...`) in the project's venv, against a model server that
follows the registry.

One run for logical date 2021-09-18 on 6,000 generated loans: a new snapshot is current with that
as_of, the challenger is an MLflow run with the gate's decision recorded, the model server serves
the promoted version, and the train task, failing once on purpose, succeeded on Airflow's retry.
The same date again recomputes nothing (the run key comes from the logical date).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from configuration.network import free_port
from configuration.settings import REPO_ROOT, load_settings
from features.sample_data import generate, write
from pipeline.child import settings_toml
from pipeline.record import RunRecord

pytestmark = pytest.mark.slow

STEPS = ["ingest", "features", "materialize", "drift", "train", "evaluate", "promote", "deploy"]
DATE = "2021-09-18"


def served_version(port: int) -> str | None:
    from features.contract import FEATURE_COLUMNS

    try:
        answer = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=",".join(["0"] * len(FEATURE_COLUMNS)) + "\n",
            headers={"Content-Type": "text/csv"},
            timeout=5,
        )
    except httpx.HTTPError:
        return None
    return answer.headers.get("X-Model-Version") if answer.status_code == 200 else None


def test_the_dag_runs_the_lifecycle_end_to_end(airflow_side, tmp_path):
    csv = tmp_path / "loans.csv"
    raw, truth = generate(6_000, seed=23, positive_rate=0.15)
    write(raw, truth, csv)
    settings = load_settings(
        paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")},
        spark={"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        metastore={"kind": "embedded", "derby_dir": str(tmp_path / "metastore")},
        features={"database": f"o_{uuid.uuid4().hex[:10]}"},
        serving={"port": free_port(), "watch_interval_seconds": 0.5},
        airflow={
            "project_python": str(airflow_side.wrapper),
            "input_uri": str(csv),
            "retries": 2,
            "retry_delay_seconds": 1,
        },
    )
    config = tmp_path / "settings.toml"  # what every task's CLI (and the model server) reads
    config.write_text(settings_toml(settings))
    log = tmp_path / "model-server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving", "--port", str(settings.serving.port)],
            cwd=REPO_ROOT,
            env={**os.environ, "SPARKMAKER_CONFIG": str(config)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        run = airflow_side.run(
            settings,
            "test",
            DATE,
            timeout=1500,
            SPARKMAKER_CONFIG=str(config),
            REAL_PYTHON=sys.executable,
            FAIL_ONCE_STEP="train",
        )
        assert run["state"] == "success", airflow_side.output[-4000:]
        assert {t: i["state"] for t, i in run["tasks"].items()} == dict.fromkeys(STEPS, "success")
        assert run["tasks"]["train"]["try_number"] == 2  # failed once, then Airflow's retry succeeded
        assert "injected transient failure of train" in airflow_side.output

        from features import lake

        current = lake.read_current(settings)
        assert current["as_of"] == DATE
        assert lake.read_manifest(settings)["rows_accepted"] > 5_000

        record = RunRecord.open(settings, f"airflow-{DATE}")
        assert record.output("features")["run_id"] == current["run_id"]
        evaluation = record.output("evaluate")
        assert evaluation["promote"] is True and evaluation["decision"]["rows"] >= settings.pipeline.gate.min_rows

        import mlflow

        from training.mlflow_store import tracking_uri
        from training.registry import open_registry

        registry = open_registry(settings)
        version = registry.alias("production")
        assert version == record.output("train")["version"]
        logged = mlflow.MlflowClient(tracking_uri(settings)).get_run(registry.run_of(version)).data
        assert logged.tags["gate.decision"] == "promote"

        deadline = time.monotonic() + 60  # the server follows the production alias
        while served_version(settings.serving.port) != version and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
        assert served_version(settings.serving.port) == version, log.read_text()[-2000:]

        # The same logical date again: the same run key, so nothing is recomputed or promoted.
        again = airflow_side.run(
            settings, "test", DATE, timeout=1500, SPARKMAKER_CONFIG=str(config), REAL_PYTHON=sys.executable
        )
        assert again["state"] == "success", airflow_side.output[-4000:]
        assert lake.read_current(settings)["run_id"] == current["run_id"]
        assert [v.version for v in open_registry(settings).versions()] == [version]
    finally:
        server.terminate()
        server.wait(timeout=30)
