"""Fixtures of the serving tests: real models in the artifact format, a real registry, real servers.

Servers are started as `python -m serving` subprocesses on free 127.0.0.1 ports and
stopped at the end; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from configuration.network import free_port
from features.contract import FEATURE_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"


def synthetic_features(rows: int, seed: int) -> np.ndarray:
    """Rows shaped like the contract's features (counts, amounts, ages, years, a flag), 10 % missing."""
    rng = np.random.default_rng(seed)
    matrix = np.column_stack(
        [
            rng.poisson(3, rows),
            rng.gamma(2.0, 1500.0, rows),
            rng.integers(18, 80, rows),
            rng.integers(0, 40, rows),
            rng.integers(0, 2, rows),
        ]
    ).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    return matrix


def make_model_dir(path: Path, seed: int = 0, rounds: int = 40, depth: int = 4, threshold: float = 0.2) -> Path:
    """Train a small real binary:logistic model and write it as a model directory (training.artifact)."""
    import xgboost

    from training import artifact

    x = synthetic_features(3000, seed)
    rng = np.random.default_rng(seed + 100)
    signal_ = 0.3 * np.nan_to_num(x[:, 0]) - 0.02 * np.nan_to_num(x[:, 2], nan=40) + 0.5 * np.nan_to_num(x[:, 4])
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(signal_ - 1.0)))).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": depth, "eta": 0.2, "seed": seed, "nthread": 1},
        xgboost.DMatrix(x, label=y, feature_names=list(FEATURE_COLUMNS)),
        num_boost_round=rounds,
    )
    path.mkdir(parents=True, exist_ok=True)
    artifact.write_booster(booster, path)
    artifact.write_metadata(
        path,
        {
            "threshold": threshold,
            "metrics": {"roc_auc": 0.7},
            "hyperparameters": {"max_depth": depth, "num_round": rounds},
            "training_data": {
                "run_id": f"run-{seed}",
                "uri": "/lake/x",
                "rows_train": 3000,
                "rows_validation": 0,
                "split": "none",
            },
            "code_version": "unknown",
            "created_at": "2026-01-01T00:00:00Z",
        },
    )
    return path


def reference_predict(model_dir: Path, matrix: np.ndarray) -> np.ndarray:
    """XGBoost's own prediction from the model file, independent of the server's code."""
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray((Path(model_dir) / "xgboost-model").read_bytes()))
    return booster.predict(xgboost.DMatrix(matrix, missing=np.nan, feature_names=list(FEATURE_COLUMNS)))


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_env(tmp: Path, registry_dir: Path | None = None, **serving: str) -> dict[str, str]:
    # Hermetic like the rest of the suite: tests/conftest.py points SPARKMAKER_CONFIG at the tracked file.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SAGEMAKER_") and (not k.startswith("SPARKMAKER_") or k == "SPARKMAKER_CONFIG")
    }
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "SPARKMAKER_PATHS__STATE_DIR": str(tmp / "state"),
            "SPARKMAKER_PATHS__LAKE": str(tmp / "lake"),
            "SPARKMAKER_SERVING__ADMIN_TOKEN": ADMIN_TOKEN,
            "SPARKMAKER_SERVING__WATCH_INTERVAL_SECONDS": "0.2",
        }
    )
    if registry_dir is not None:
        env["SPARKMAKER_TRAINING__REGISTRY_DIR"] = str(registry_dir)
    for key, value in serving.items():
        env[f"SPARKMAKER_SERVING__{key.upper()}"] = value
    return env


def start_server(
    tmp: Path,
    args: list[str],
    env: dict[str, str],
    wait_ready: bool = True,
    timeout: float = 60,
    port: int | None = None,
) -> RunningServer:
    """`python -m serving ARGS` on a free (or the given) port, once /ping answers 200 (or 503 without wait_ready)."""
    port = port or free_port()
    log_path = tmp / f"server-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", *args, "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{server.log()}")
        try:
            answer = httpx.get(f"{server.url}/ping", timeout=1)
            if answer.status_code == 200 or (not wait_ready and answer.status_code == 503):
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"the server did not become ready in {timeout} s:\n{server.log()}")


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serving-models")


@pytest.fixture(scope="session")
def model_a(models_root: Path) -> Path:
    return make_model_dir(models_root / "a", seed=1, rounds=60, depth=5, threshold=0.25)


@pytest.fixture(scope="session")
def model_b(models_root: Path) -> Path:
    return make_model_dir(models_root / "b", seed=2, rounds=30, depth=3, threshold=0.35)


@pytest.fixture(scope="session")
def dir_server(tmp_path_factory, model_a: Path):
    """A one-worker server of model A from its directory, labelled version "7"."""
    tmp = tmp_path_factory.mktemp("dir-server")
    server = start_server(tmp, ["--model-dir", str(model_a)], server_env(tmp, model_version="7"))
    yield server
    server.stop()


def registry_with(root: Path, *model_dirs: Path):
    """The MLflow registry at `root` (its default SQLite store inside) holding the given model directories as versions 1, 2, ..."""
    from training import artifact
    from training.mlflow_registry import MlflowRegistry

    registry = MlflowRegistry(root)
    for index, model_dir in enumerate(model_dirs):
        tar = artifact.pack(model_dir, root.parent / f"{root.name}-{index}.tar.gz")
        registry.register(tar, artifact.read_metadata(model_dir))
    return registry


class RecordingTransport:
    """Enough of an asyncio transport to feed an HTTP protocol in process: it records the writes, sends nothing."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default=None):
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def protocol_in_process(app, protocol_class=None, **options):
    """An HTTP protocol of uvicorn's (the model server's, by default) connected to a RecordingTransport in this
    thread's event loop, with a fixed date header: (protocol, transport, server state). Feed it with data_received."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from serving.fast_http import InvocationsProtocol

    protocol_class = protocol_class or InvocationsProtocol
    config = Config(app=app, http=protocol_class, proxy_headers=False, log_level="warning", **options)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Mon, 07 Dec 2026 10:00:00 GMT")]
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport, state
