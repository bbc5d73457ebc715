"""The local stack's `mlflow server` asks for its login: without one, any local user could move the
production alias through MLflow's REST API, read every run's artifacts or upload new ones as root."""

from __future__ import annotations

import base64
import json
import stat
import urllib.error
import urllib.request

import pytest

from configuration.network import free_port
from configuration.settings import load_settings
from stack.local import Stack, port_open
from stack.security import mlflow_auth


def call(url: str, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def mlflow_stack(tmp_path):
    port = free_port()
    settings = load_settings(
        paths={"state_dir": str(tmp_path / "state"), "lake": str(tmp_path / "lake")}, mlflow={"port": port}
    )
    stack = Stack(settings)
    yield stack, port
    stack.supervisor.stop([stack.mlflow_service()], 20)


@pytest.mark.slow  # two MLflow starts, ~30 s each on 2 cores
def test_mlflow_answers_only_its_login_and_a_new_password_file_brings_a_new_user_store(mlflow_stack):
    stack, port = mlflow_stack
    base = f"http://127.0.0.1:{port}"
    assert stack.ensure_running(stack.mlflow_service(prepare=True)) == "started"
    login = mlflow_auth(stack.state)
    assert stat.S_IMODE(login.password_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((stack.state / "mlflow-auth").stat().st_mode) == 0o700
    assert stat.S_IMODE((stack.state / "mlflow-auth" / "basic_auth.ini").stat().st_mode) == 0o600

    search = f"{base}/api/2.0/mlflow/registered-models/search"
    alias = f"{base}/api/2.0/mlflow/registered-models/alias"
    assert call(f"{base}/health") == 200  # the stack's health check needs no login
    assert call(search) == 401
    assert call(search, login.user, "wrong") == 401
    assert call(alias, body={"name": "sparkmaker-credit-risk", "alias": "production", "version": "1"}) == 401
    assert call(f"{base}/ajax-api/2.0/mlflow/experiments/search", body={"max_results": 1}) == 401
    assert call(search, login.user, login.password) == 200
    assert call(f"{base}/") == 401  # the UI: the browser asks for the login
    assert call(f"{base}/", login.user, login.password) == 200

    # The password file deleted by hand: the next start makes a new password, and it is the one that works.
    stack.supervisor.stop([stack.mlflow_service()], 20)
    assert not port_open(port)
    login.password_path.unlink()
    assert stack.ensure_running(stack.mlflow_service(prepare=True)) == "started"
    renewed = mlflow_auth(stack.state)
    assert renewed.password != login.password
    assert call(search, renewed.user, renewed.password) == 200
    assert call(search, login.user, login.password) == 401
