"""`python -m api` as a user runs it: keygen, serve with JSON logs, a real SIGTERM, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.prediction_log import open_prediction_log
from configuration.settings import load_settings
from tests.api.conftest import CUSTOMERS, REPO_ROOT, free_port, materialize_generation

BASE_CONFIG = REPO_ROOT / "configuration" / "sparkmaker.toml"


def run_api(*args: str, config: Path | None = None, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKMAKER_")}
    env["SPARKMAKER_CONFIG"] = str(config or BASE_CONFIG)
    return subprocess.Popen(
        [sys.executable, "-m", "api", *args],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def wait_healthy(server: subprocess.Popen, port: int, timeout: float = 30) -> str:
    """The API's URL once GET /health answers 200; fails with its stderr if it exits first."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, (
            server.stderr.read() if server.poll() is not None else "no start"
        )
        time.sleep(0.1)


def test_keygen_prints_a_key_and_its_sha256(tmp_path):
    done = run_api("keygen")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    lines = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("key:", "sha256:")))
    key, digest = lines["key"].strip(), lines["sha256"].strip()
    assert hashlib.sha256(key.encode()).hexdigest() == digest


def test_keygen_write_then_serve_with_json_logs_and_a_graceful_sigterm(tmp_path, model_server):
    config = tmp_path / "local.toml"
    config.write_text(
        f'[paths]\nlake = "{tmp_path / "lake"}"\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[api]\nmodel_url = "{model_server.url}"\nlog_flush_ms = 60000\nlog_flush_entries = 100000\n'
    )
    keygen = run_api("keygen", "--write", "--config", str(config))
    out, err = keygen.communicate(timeout=60)
    assert keygen.returncode == 0, err
    key = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("key:"))

    os.environ["SPARKMAKER_CONFIG"] = str(config)
    try:
        settings = load_settings()
    finally:
        os.environ["SPARKMAKER_CONFIG"] = str(BASE_CONFIG)
    materialize_generation(settings, 0)
    port = free_port()
    server = run_api("--port", str(port), config=config)
    try:
        url = wait_healthy(server, port)
        answers = [
            httpx.get(
                f"{url}/predict/{c}",
                headers={"Authorization": f"Bearer {key}", "X-Request-ID": f"cli-req-{i}"},
                timeout=10,
            )
            for i, c in enumerate(CUSTOMERS[:5])
        ]
        assert [a.status_code for a in answers] == [200] * 5
        assert (
            httpx.get(f"{url}/predict/{CUSTOMERS[0]}", headers={"Authorization": "Bearer not-the-key"}).status_code
            == 401
        )
    finally:
        server.send_signal(signal.SIGTERM)  # flush interval is a minute: only the graceful stop writes the log
        _, err = server.communicate(timeout=60)
    # uvicorn re-raises the SIGTERM it handled once shut down cleanly, so the exit is the signal's.
    assert server.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    records = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
    access = [r for r in records if r.get("logger") == "api.access" and r.get("request_id", "").startswith("cli-req-")]
    assert len(access) == 5 and all(r["status"] == 200 and r["route"] == "/predict/{id}" for r in access)
    assert any("ready to serve" in r["message"] for r in records)
    assert key not in err and "not-the-key" not in err
    logged = open_prediction_log(settings).recent(100)
    assert [e.request_id for e in logged] == [f"cli-req-{i}" for i in range(5)]


def test_serve_without_keys_is_one_line(tmp_path):
    server = run_api("--port", str(free_port()))
    _, err = server.communicate(timeout=60)
    assert server.returncode == 2
    assert err.strip().splitlines() == [
        "api: error: API keys are required (api.auth_enabled) but api.api_key_hashes is empty: "
        "run python -m api keygen --write, or set api.auth_enabled = false for a local trial"
    ]


def test_serve_on_a_busy_port_is_one_line(tmp_path):
    import socket

    config = tmp_path / "local.toml"
    config.write_text(f'[api]\napi_key_hashes = ["{"a" * 64}"]\n')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = run_api("--port", str(port), config=config)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 2
    assert err.strip().splitlines() == [
        f"api: error: port {port} on 127.0.0.1 is in use: stop the other server or choose another with --port"
    ]


def test_a_key_put_in_the_settings_instead_of_its_hash_is_one_line(tmp_path):
    config = tmp_path / "local.toml"
    config.write_text('[api]\napi_key_hashes = ["smk_my-secret-key"]\n')
    server = run_api("--port", str(free_port()), config=config)
    _, err = server.communicate(timeout=60)
    assert server.returncode == 2
    assert "api.api_key_hashes must hold sha256 hex digests" in err and "smk_my-secret-key" not in err
    assert len(err.strip().splitlines()) == 1
