"""The entry points: one-line errors instead of tracebacks, SageMaker's variables, the `serve` script."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import REPO_ROOT, free_port, registry_with, server_env


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("serving: error: "), done.stderr
    assert fragment in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_help(tmp_path):
    done = _run(["--help"], server_env(tmp_path))
    assert done.returncode == 0
    for word in ("--model-dir", "sagemaker", "batch", "serve"):
        assert word in done.stdout


def test_missing_model_dir(tmp_path):
    _one_line_error(
        _run(["--model-dir", str(tmp_path / "absent"), "--port", str(free_port())], server_env(tmp_path)),
        "does not exist",
    )


def test_model_whose_sha256_does_not_match_is_refused(tmp_path, model_a):
    copy = tmp_path / "copy"
    shutil.copytree(model_a, copy)
    with open(copy / "xgboost-model", "ab") as handle:
        handle.write(b" ")
    _one_line_error(_run(["--model-dir", str(copy), "--port", str(free_port())], server_env(tmp_path)), "sha256")


def test_broken_production_model_is_refused_at_start(tmp_path, model_a):
    registry = registry_with(tmp_path / "registry", model_a)
    registry.promote("1")
    (tmp_path / "registry" / "models" / "1" / "model" / "xgboost-model").write_bytes(b"{}")
    done = _run(["--port", str(free_port())], server_env(tmp_path, registry_dir=tmp_path / "registry"))
    _one_line_error(done, "sha256")


def test_port_in_use(tmp_path, model_a):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _one_line_error(
            _run(["--model-dir", str(model_a), "--port", str(port)], server_env(tmp_path)),
            f"port {port} on 127.0.0.1 is in use",
        )


@pytest.mark.parametrize("name, value", [("SAGEMAKER_BIND_TO_PORT", "http"), ("SAGEMAKER_MODEL_SERVER_WORKERS", "0")])
def test_bad_sagemaker_variables(tmp_path, model_a, name, value):
    env = server_env(tmp_path) | {name: value}
    _one_line_error(_run(["--model-dir", str(model_a)], env), name)


def test_batch_without_a_production_model_fails_before_spark(tmp_path):
    done = _run(["batch"], server_env(tmp_path, registry_dir=tmp_path / "registry"))
    _one_line_error(done, "no production model")


def test_batch_engine_arrow_on_what_it_cannot_cast_is_one_line(tmp_path, model_a):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.contract import FEATURE_COLUMNS

    registry_with(tmp_path / "registry", model_a).promote("1")
    source = tmp_path / "strings"
    source.mkdir()
    columns = {"id": pa.array([1, 2], pa.int64()), **{name: pa.array(["1", "2"]) for name in FEATURE_COLUMNS}}
    pq.write_table(pa.table(columns), source / "part-0.parquet")
    env = server_env(tmp_path, registry_dir=tmp_path / "registry") | {
        "SPARKMAKER_METASTORE__DERBY_DIR": str(tmp_path / "metastore"),
        "SPARKMAKER_SPARK__MASTER": "local[1]",
    }

    done = _run(["batch", "--input", str(source), "--output", str(tmp_path / "out"), "--engine", "arrow"], env)

    # The JVM's own one-line notice of Spark's `--add-modules jdk.incubator.vector` may come first.
    lines = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Using incubator modules")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("serving: error: ") and "use spark (or auto)" in lines[0]
    assert not (tmp_path / "out").exists()


def test_serve_script_follows_sagemakers_variables(tmp_path, model_a):
    port = free_port()
    env = server_env(tmp_path) | {
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "PATH": f"{Path(sys.executable).parent}:{server_env(tmp_path)['PATH']}",
        "SPARKMAKER_SERVING__MODEL_DIR": str(model_a),
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(REPO_ROOT / "serving" / "serve")], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        import time

        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/execution-parameters").json()["MaxConcurrentTransforms"] == 2
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", content=b"1,2000,40,3,1")
        assert answer.status_code == 200 and answer.headers["x-model-version"].startswith("sha256-")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()
