"""A real Spark standalone cluster (stack.spark_cluster: a master and two one-core workers on loopback).

The feature job and batch scoring run on it as a user runs them (`--master spark://...`, in
processes of their own) and their outputs are compared row by row with the same steps in
local mode (the suite's shared session). The executors' own logs show that both workers
ran tasks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configuration.network import free_port
from configuration.settings import REPO_ROOT, load_settings
from features.sample_data import generate, write
from serving.batch import run_batch
from stack import spark_cluster
from tests.features.test_job import run_job
from tests.serving.conftest import make_model_dir, registry_with

# Several JVMs: minutes on a busy 2-core machine (about 2 min quiet), so slow and given more time.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
AS_OF = dt.date(2021, 6, 30)


def _two_free_ports() -> int:
    """A port p with p + 1 free too (workers take consecutive ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise AssertionError("no two consecutive free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark-cluster")
    settings = load_settings(
        paths={"state_dir": str(root / "state"), "lake": str(root / "lake")},
        spark_cluster={
            "master_port": free_port(),
            "master_ui_port": free_port(),
            "worker_port": _two_free_ports(),
            "worker_ui_port": _two_free_ports(),
            "workers": 2,
        },
    )
    stopped = None
    try:
        lines = spark_cluster.start(settings)
        assert all(line.endswith("started") for line in lines), lines
        assert len(spark_cluster.alive_worker_ports(settings)) == 2
        yield settings
        # What a person runs at the end of the day: ./stop.sh stops the cluster with the stack.
        sc = settings.spark_cluster
        env = {
            **_env(root),
            "SPARKMAKER_PATHS__LAKE": str(root / "lake"),
            "SPARKMAKER_SPARK_CLUSTER__MASTER_PORT": str(sc.master_port),
            "SPARKMAKER_SPARK_CLUSTER__MASTER_UI_PORT": str(sc.master_ui_port),
            "SPARKMAKER_SPARK_CLUSTER__WORKER_PORT": str(sc.worker_port),
            "SPARKMAKER_SPARK_CLUSTER__WORKER_UI_PORT": str(sc.worker_ui_port),
        }
        stopped = subprocess.run(
            [sys.executable, "-m", "stack", "stop"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        print("\n".join(spark_cluster.stop(settings)))  # whatever the CLI left (nothing, when it works)
    assert stopped is not None and stopped.returncode == 0, stopped
    assert "stopped spark-master" in stopped.stdout and stopped.stdout.count("stopped spark-worker-") == 2, (
        stopped.stdout
    )
    assert spark_cluster.cluster_state(settings) is None  # stopped: nothing answers


def _env(tmp: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKMAKER_") or k == "SPARKMAKER_CONFIG"}
    env.update(
        {"PYTHONPATH": str(REPO_ROOT), "SPARK_LOCAL_IP": "127.0.0.1", "SPARKMAKER_PATHS__STATE_DIR": str(tmp / "state")}
    )
    env.update({f"SPARKMAKER_{k.upper()}": v for k, v in settings.items()})
    return env


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _rows(uri: str) -> list[dict]:
    # Spark writes rows in no fixed order: compare them sorted by their whole content.
    return sorted(pq.read_table(uri).to_pylist(), key=repr)


def _tasks_per_worker(settings) -> list[int]:
    """'Running task' lines in each worker's executor logs (Spark's executors log every task they start)."""
    counts = []
    for index in (1, 2):
        work = Path(settings.paths.state_dir) / "spark-cluster" / f"work-{index}"
        counts.append(sum(path.read_text(errors="replace").count("Running task") for path in work.glob("*/*/stderr")))
    return counts


def test_the_status_names_both_workers(cluster):
    lines = spark_cluster.status(cluster)
    assert lines[0].startswith(f"Spark master {spark_cluster.master_url(cluster)}: pid ") and "healthy" in lines[0]
    assert sum("ALIVE" in line for line in lines) == 2


def test_feature_job_and_batch_scoring_on_the_cluster_equal_local_mode(cluster, spark, lake_settings, tmp_path):
    csv = tmp_path / "loans.csv"
    raw, truth = generate(rows=2_000, seed=5, dirty=0.02)
    write(raw, truth, csv)

    # Local mode, in the suite's session.
    local = run_job(spark, lake_settings, csv, AS_OF)
    # The cluster, as a user runs it.
    cluster_lake = tmp_path / "cluster-lake"
    _run(
        [
            sys.executable,
            "-m",
            "features",
            "run",
            "--input",
            str(csv),
            "--lake",
            str(cluster_lake),
            "--as-of",
            AS_OF.isoformat(),
            "--master",
            spark_cluster.master_url(cluster),
            "--manifest",
            str(tmp_path / "cluster.json"),
        ],
        _env(tmp_path),
    )
    remote = json.loads((tmp_path / "cluster.json").read_text())
    assert remote["spark"]["master"] == spark_cluster.master_url(cluster)
    for output in ("training", "latest", "rejects"):
        local_rows, remote_rows = _rows(local["outputs"][output]["uri"]), _rows(remote["outputs"][output]["uri"])
        assert len(local_rows) == len(remote_rows) == local["outputs"][output]["rows"] > 0, output
        assert remote_rows == local_rows, output
    assert remote["rejects"] == local["rejects"] and remote["rows_accepted"] == local["rows_accepted"]

    # Batch scoring of the cluster's latest table: on the cluster, then locally.
    model = make_model_dir(tmp_path / "model", seed=4, rounds=30, depth=4)
    registry_root = tmp_path / "registry"
    registry_with(registry_root, model)
    cluster_scores = tmp_path / "cluster-scores"
    _run(
        [
            sys.executable,
            "-m",
            "serving",
            "batch",
            "--input",
            remote["outputs"]["latest"]["uri"],
            "--output",
            str(cluster_scores),
            "--model-version",
            "1",
        ],
        _env(
            tmp_path,
            spark__master=spark_cluster.master_url(cluster),
            training__registry_dir=str(registry_root),
            paths__lake=str(cluster_lake),
        ),
    )
    training = lake_settings.training.model_copy(update={"registry_dir": str(registry_root)})
    batch_settings = lake_settings.model_copy(update={"training": training})
    remote_scores = _rows(str(cluster_scores))
    assert len(remote_scores) == remote["outputs"]["latest"]["rows"] > 0
    # Local mode's two engines: a Spark job on local[2], and the in-process one `auto` picks for a small local input.
    for engine in ("spark", "arrow"):
        local_scores = tmp_path / f"local-scores-{engine}"
        run_batch(
            batch_settings,
            input_uri=remote["outputs"]["latest"]["uri"],
            output_uri=str(local_scores),
            version="1",
            engine=engine,
            spark=spark,
        )
        assert remote_scores == _rows(str(local_scores)), engine  # probabilities equal to the bit, labels, versions

    assert all(count > 0 for count in _tasks_per_worker(cluster)), _tasks_per_worker(cluster)
