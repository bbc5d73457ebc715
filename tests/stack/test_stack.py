"""start.sh / stop.sh / reset.sh for real: every service started, idempotent, stopped by PID, ports checked."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from configuration.settings import REPO_ROOT
from tests.stack.conftest import scratch_stack


@pytest.fixture(scope="module")
def stack_env():
    scratch = scratch_stack(6_000, seed=17)
    env, root = scratch["env"], scratch["root"]
    env["SPARKMAKER_STACK__SAMPLE_ROWS"] = "5000"
    yield scratch
    subprocess.run(["./stop.sh"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


def script(name: str, stack_env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"./{name}.sh", *args],
        cwd=REPO_ROOT,
        env=stack_env["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_start_serves_predictions_and_sql_then_stop_stops_only_its_own(stack_env):
    first = script("start", stack_env, "--input", str(stack_env["csv"]))
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    api = next(line.split(": ", 1)[1] for line in lines if line.startswith("API: "))
    key = next(line.split(": ", 1)[1] for line in lines if line.startswith("API key: "))
    assert api == f"http://127.0.0.1:{stack_env['ports']['api']}"
    assert any(line.startswith("SQL (HiveServer2): jdbc:hive2://127.0.0.1:") for line in lines)
    console = next(line.split(": ", 1)[1] for line in lines if line.startswith("Console: "))
    assert console == f"{api}/console"
    with urllib.request.urlopen(
        f"{console}/sign-in", timeout=10
    ) as response:  # the console answers; pages need a session
        assert response.status == 200 and b'type="password"' in response.read()
    assert f"Airflow: http://127.0.0.1:{stack_env['ports']['airflow']}" in lines
    assert any(line.startswith("Airflow login: user admin, password ") for line in lines)
    assert f"MLflow: http://127.0.0.1:{stack_env['ports']['mlflow']}" in lines
    with urllib.request.urlopen(f"http://127.0.0.1:{stack_env['ports']['mlflow']}/health", timeout=10) as response:
        assert response.status == 200
    # MLflow's data only with the printed login (tests/stack/test_mlflow_login.py has the rest).
    mlflow_password = next(line for line in lines if line.startswith("MLflow login: user admin, password ")).split()[5]
    search = f"http://127.0.0.1:{stack_env['ports']['mlflow']}/api/2.0/mlflow/registered-models/search"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(search, timeout=10)
    assert refused.value.code == 401
    basic = base64.b64encode(f"admin:{mlflow_password}".encode()).decode()
    with urllib.request.urlopen(
        urllib.request.Request(search, headers={"Authorization": f"Basic {basic}"}), timeout=10
    ) as response:
        assert response.status == 200 and "registered_models" in json.loads(response.read())
    # the lifecycle ran through the pipeline: the first model judged by the gate and promoted
    assert any("[pipeline] promote" in line and "is production (the first model)" in line for line in lines)

    # the printed curl works: the customer it names gets a prediction
    curl = next(line for line in lines if line.startswith("Try: curl"))
    customer = int(curl.rsplit("/", 1)[1])
    request = urllib.request.Request(f"{api}/predict/{customer}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert body["id"] == customer and 0.0 <= body["probability"] <= 1.0

    from pyhive import hive

    sql_password = next(line for line in lines if line.startswith("SQL user: ")).split("password: ")[1].split()[0]
    with hive.connect(
        "127.0.0.1",
        port=stack_env["ports"]["thrift"],
        database="credit_risk",
        username="sparkmaker",
        password=sql_password,
        auth="CUSTOM",
    ) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT count(*) FROM training_features")
        assert cursor.fetchone()[0] == 6_000

    again = script("start", stack_env)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout and "is current" in again.stdout and "started" not in again.stdout
    assert "skipped: production v1 was trained on this snapshot" in again.stdout  # no second model

    stopped = script("stop", stack_env)
    assert stopped.returncode == 0
    assert len([line for line in stopped.stdout.splitlines() if line.startswith("stopped ")]) == 6
    assert not any(listening(port) for port in stack_env["ports"].values())
    assert script("stop", stack_env).stdout.strip() == "sparkmaker: nothing to stop"


@pytest.mark.slow
def test_a_taken_port_is_a_clear_error_and_reset_needs_confirmation(stack_env):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack_env["ports"]["metastore"]))
        squatter.listen()
        taken = script("start", stack_env, "--input", str(stack_env["csv"]))
    assert taken.returncode == 2
    assert taken.stderr.strip() == (
        f"sparkmaker: error: port {stack_env['ports']['metastore']} for the Hive metastore is taken by another "
        "program: stop it or change the port in configuration/local.toml"
    )
    refused = script("reset", stack_env)
    assert refused.returncode == 2 and "confirm with ./reset.sh --yes" in refused.stderr
    assert (stack_env["root"] / "lake").exists()
    done = script("reset", stack_env, "--yes")
    assert done.returncode == 0
    assert not (stack_env["root"] / "lake").exists() and not (stack_env["root"] / "state").exists()
