"""`python -m stack spark-cluster` without a cluster: what it says, and the commands it would run (no JVM started)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from configuration.errors import UserError
from configuration.settings import REPO_ROOT, load_settings
from stack import spark_cluster


def _settings(tmp_path):
    return load_settings(
        paths={"state_dir": str(tmp_path / "state"), "lake": str(tmp_path / "lake")},
        spark_cluster={"master_port": 18890, "master_ui_port": 18891, "worker_port": 18892, "worker_ui_port": 18895},
    )


def test_status_and_stop_without_a_cluster_say_so(tmp_path):
    settings = _settings(tmp_path)
    assert spark_cluster.status(settings) == [
        "Spark master: not running (start it: python -m stack spark-cluster start)"
    ]
    assert spark_cluster.stop(settings) == ["no Spark cluster was running from this state folder"]


def test_workers_take_consecutive_ports_on_loopback_and_their_own_work_folder(tmp_path):
    settings = _settings(tmp_path)
    second = spark_cluster.worker_service(settings, 2)
    command = second.command
    assert command[1] == "org.apache.spark.deploy.worker.Worker"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "18893" and command[command.index("--webui-port") + 1] == "18896"
    assert command[command.index("--work-dir") + 1] == str(tmp_path / "state" / "spark-cluster" / "work-2")
    assert command[-1] == "spark://127.0.0.1:18890"
    master = spark_cluster.master_service(settings).command
    assert master[1:] == [
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        "18890",
        "--webui-port",
        "18891",
    ]


def test_no_workers_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="at least one worker"):
        spark_cluster.start(_settings(tmp_path), workers=-1)


def test_the_command_line_has_help():
    done = subprocess.run(
        [sys.executable, "-m", "stack", "spark-cluster", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "start,stop,status" in done.stdout and "--workers" in done.stdout
