"""Airflow as the local stack runs it: its components (orchestration/components.py) started as the stack's
Service, healthy on 127.0.0.1 and listening nowhere else, a generated login, the DAG scheduled by
Airflow's own scheduler, a running task's log read through the loopback log server, and stop leaving
no process."""

from __future__ import annotations

import ipaddress
import json
import stat
import time
import urllib.error
import urllib.request
from dataclasses import replace

import psutil
import pytest

from configuration.network import free_port
from configuration.settings import load_settings
from orchestration import runtime
from stack.local import Stack, port_open

STEPS = ["ingest", "features", "materialize", "drift", "train", "evaluate", "promote", "deploy"]


def call(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # a loaded 2-core machine is slow
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


@pytest.mark.slow
def test_the_stack_runs_airflow_which_schedules_the_dag_and_stops_every_process(airflow_side, tmp_path):
    port, log_port = free_port(), free_port()
    settings = load_settings(
        paths={"state_dir": str(tmp_path / "state"), "lake": str(tmp_path / "lake")},
        airflow={
            "port": port,
            "log_server_port": log_port,
            "project_python": str(airflow_side.wrapper),
            "input_uri": "/data/loans.csv",
            "schedule": "none",
            "retry_delay_seconds": 1,
        },
    )
    stack = Stack(settings)
    service = stack.airflow_service()
    # The service reads its settings itself, as `python -m orchestration serve` under start.sh does.
    service = replace(
        service,
        env={
            **service.env,
            "CALLS_LOG": str(airflow_side.calls_log),
            "SPARKMAKER_AIRFLOW__PORT": str(port),
            "SPARKMAKER_AIRFLOW__LOG_SERVER_PORT": str(log_port),
            "SLOW_STEP": "train",
            "SLOW_SECONDS": "25",
            "SPARKMAKER_AIRFLOW__PROJECT_PYTHON": str(airflow_side.wrapper),
            "SPARKMAKER_AIRFLOW__INPUT_URI": "/data/loans.csv",
            "SPARKMAKER_AIRFLOW__SCHEDULE": "none",
            "SPARKMAKER_AIRFLOW__RETRY_DELAY_SECONDS": "1",
        },
    )
    login = runtime.ensure_login(runtime.airflow_home(settings))
    assert stat.S_IMODE(login.path.stat().st_mode) == 0o600
    assert runtime.ensure_login(runtime.airflow_home(settings)) == login  # generated once
    try:
        assert stack.ensure_running(service) == "started"
        base = f"http://127.0.0.1:{port}"
        assert service.address == base
        assert stack.ensure_running(service) == "already running"

        # Log in as a person would; a wrong password is refused; the API needs the token.
        assert call(f"{base}/auth/token", body={"username": "admin", "password": "wrong"})[0] == 401
        status, body = call(f"{base}/auth/token", body={"username": login.user, "password": login.password})
        assert status == 201, status
        token = body["access_token"]
        assert call(f"{base}/api/v2/dags/credit_risk_lifecycle")[0] == 401

        deadline = time.monotonic() + 120  # the DAG processor parses the folder first
        while (
            status := call(f"{base}/api/v2/dags/credit_risk_lifecycle", token)[0]
        ) != 200 and time.monotonic() < deadline:
            time.sleep(2)
        assert status == 200
        status, dag = call(f"{base}/api/v2/dags/credit_risk_lifecycle", token)
        assert dag["is_paused"] is False

        # Trigger a run for a past date, as a backfill would; the scheduler runs it to the end.
        status, run = call(
            f"{base}/api/v2/dags/credit_risk_lifecycle/dagRuns",
            token,
            {"logical_date": "2026-10-01T00:00:00Z", "conf": {}},
        )
        assert status == 200, status
        run_url = f"{base}/api/v2/dags/credit_risk_lifecycle/dagRuns/{run['dag_run_id']}"
        # While `train` runs, its log comes from the log server on the loopback, as the UI polls it.
        train_url = f"{run_url}/taskInstances/train"
        deadline = time.monotonic() + 300
        while call(train_url, token)[1].get("state") != "running" and time.monotonic() < deadline:
            time.sleep(1)
        assert call(train_url, token)[1]["state"] == "running"
        time.sleep(2)  # its first line written
        status, log = call(f"{train_url}/logs/1", token)
        assert status == 200, status
        events = [str(entry.get("event")) for entry in log["content"]]
        assert not [e for e in events if "Could not read served logs" in e], events[:6]
        assert any("train is running" in e for e in events), events
        # The log server hands out logs only against the API server's signed token.
        assert call(f"http://127.0.0.1:{log_port}/log/dag_id=credit_risk_lifecycle/x.log")[0] == 403

        deadline = time.monotonic() + 300
        while call(run_url, token)[1].get("state") not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(3)
        assert call(run_url, token)[1]["state"] == "success", (stack.logs / "airflow.log").read_text()[-3000:]
        calls = airflow_side.calls()
        assert [c["argv"][3] for c in calls] == STEPS
        assert all(c["argv"][4:8] == ["--run-key", "airflow-2026-10-01", "--as-of", "2026-10-01"] for c in calls)

        pid = stack.running_pid("airflow")
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        assert len(family) >= 5  # scheduler, DAG processor, triggerer, API server, log server
        # Nothing of Airflow listens beyond the loopback (airflow standalone's log servers took [::]:8793, 8794).
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in family
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert {port_ for _, port_ in listening} == {port, log_port}, listening
        assert all(ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback for ip, _ in listening), listening
    finally:
        stopped = stack.stop()
    assert stopped == [f"stopped Airflow (pid {pid})"]
    # stop returns once the group is gone or SIGKILLed; a killed process may take a moment to vanish.
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    assert not port_open(port)
