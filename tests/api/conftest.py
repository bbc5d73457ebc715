"""Fixtures of the API tests: a real model server, real stores and logs, the API on a real port.

- `model_server`: `python -m serving --model-dir DIR` (a small XGBoost model trained here,
  written with training.artifact), version label "7"; one per session.
- `ApiServer` / `serve_app`: an app (the API, or a tiny bare app standing in for a slow or
  broken model server) under uvicorn on a free 127.0.0.1 port, in a thread of the test
  process, so tests can use `app.dependency_overrides` and read the app's state.
- Stores and logs are the real backends: SQLite files, Redis database 15 under a key
  prefix of the test's own, PostgreSQL tables named per test (skipped with a message
  naming the server when it is down).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.auth import hash_key
from configuration.settings import Settings, load_settings
from features.contract import FEATURE_COLUMNS
from tests.online.conftest import feature_rows, publish_lake_snapshot
from tests.serving.conftest import RunningServer, free_port, server_env, start_server

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "smk_test-key-" + "x" * 20
MODEL_VERSION = "7"
THRESHOLD = 0.3
CUSTOMERS = list(range(5_008_804, 5_008_804 + 400))
RUN_ID = "20240131T000000Z-abc123"
AS_OF = "2024-01-31"


# The model ---------------------------------------------------------------------------------
def make_model_dir(path: Path, seed: int = 3, threshold: float = THRESHOLD) -> Path:
    """A small real binary:logistic model on feature-shaped data, written in the artifact format."""
    import xgboost

    from training import artifact

    rng = np.random.default_rng(seed)
    rows = 2000
    x = np.column_stack(
        [
            rng.poisson(20, rows),
            rng.gamma(2.0, 1500.0, rows),
            rng.integers(18, 80, rows),
            rng.integers(0, 40, rows),
            rng.integers(0, 2, rows),
        ]
    ).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    logit = 0.05 * np.nan_to_num(x[:, 0]) - 0.03 * np.nan_to_num(x[:, 2], nan=40) + 0.8 * np.nan_to_num(x[:, 4]) - 0.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "seed": seed, "nthread": 1},
        xgboost.DMatrix(x, label=y, feature_names=list(FEATURE_COLUMNS)),
        num_boost_round=30,
    )
    path.mkdir(parents=True, exist_ok=True)
    artifact.write_booster(booster, path)
    artifact.write_metadata(
        path,
        {
            "threshold": threshold,
            "metrics": {"roc_auc": 0.7},
            "hyperparameters": {"max_depth": 4, "num_round": 30},
            "training_data": {
                "run_id": "run-test",
                "uri": "/lake/x",
                "rows_train": rows,
                "rows_validation": 0,
                "split": "none",
            },
            "code_version": "unknown",
            "created_at": "2026-01-01T00:00:00Z",
        },
    )
    return path


def reference_probabilities(model_dir: Path, feature_dicts: list[dict]) -> np.ndarray:
    """XGBoost's own prediction from the model file: independent of the API and of the server."""
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray((model_dir / "xgboost-model").read_bytes()))
    matrix = np.array(
        [[np.nan if f[name] is None else f[name] for name in FEATURE_COLUMNS] for f in feature_dicts], dtype=np.float32
    )
    return booster.predict(xgboost.DMatrix(matrix, missing=np.nan, feature_names=list(FEATURE_COLUMNS)))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("api-model") / "model")


def start_model_server(tmp: Path, model_dir: Path, port: int | None = None) -> RunningServer:
    """`python -m serving` on this model directory, labelled MODEL_VERSION, once /ping answers 200."""
    tmp.mkdir(parents=True, exist_ok=True)
    return start_server(tmp, ["--model-dir", str(model_dir)], server_env(tmp, model_version=MODEL_VERSION), port=port)


@pytest.fixture(scope="session")
def model_server(tmp_path_factory, model_dir: Path):
    server = start_model_server(tmp_path_factory.mktemp("model-server"), model_dir)
    yield server
    server.stop()


# Servers in a thread -------------------------------------------------------------------------
@dataclass
class ApiServer:
    app: object
    port: int
    thread: threading.Thread
    server: object
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_app(app, port: int | None = None) -> ApiServer:
    """Run an ASGI app under uvicorn (lifespan on) on a free port, in a thread; wait until it listens."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError(f"the app on port {port} did not start")
        time.sleep(0.02)
    return ApiServer(app, port, thread, server)


# Stores, logs, settings ------------------------------------------------------------------------
def store_section(kind: str, tmp: Path, request) -> dict:
    if kind == "redis":
        url = request.getfixturevalue("redis_url")  # skips, naming Redis, when it is down
        return {
            "kind": "redis",
            "redis_url": url,
            "key_prefix": f"apitest-{uuid.uuid4().hex[:10]}",
            "write_batch_rows": 100,
        }
    return {"kind": "sqlite", "sqlite_path": str(tmp / "online" / "features.sqlite"), "write_batch_rows": 100}


def log_section(kind: str, tmp: Path, request) -> dict:
    table = f"predictions_{uuid.uuid4().hex[:10]}"
    if kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")  # skips, naming PostgreSQL, when it is down
        return {"prediction_log": "postgres", "prediction_log_dsn": dsn, "prediction_log_table": table}
    return {
        "prediction_log": "sqlite",
        "prediction_log_sqlite": str(tmp / "state" / "predictions.sqlite"),
        "prediction_log_table": table,
    }


def api_settings(tmp: Path, store: dict, log: dict, model_url: str, sections: dict | None = None, **api) -> Settings:
    return load_settings(
        **(sections or {}),
        paths={"lake": str(tmp / "lake"), "state_dir": str(tmp / "state")},
        online_store=store,
        api={
            "api_key_hashes": [hash_key(API_KEY)],
            "model_url": model_url,
            "timeout_seconds": 2.0,
            "log_flush_ms": 50,
            "log_flush_entries": 50,
            "retry_after_seconds": 7,
            **log,
            **api,
        },
    )


def materialize_generation(
    settings: Settings, generation: int, run_id: str = RUN_ID, as_of: str = AS_OF, ids=CUSTOMERS
) -> dict:
    """Publish a snapshot in the test's lake and materialize it, as the feature job would."""
    from features.online.materialize import materialize

    manifest = publish_lake_snapshot(Path(settings.paths.lake), run_id, as_of, feature_rows(ids, generation))
    materialize(settings, run_id)
    return manifest


def expected_features(generation: int = 0, ids=CUSTOMERS) -> dict[int, dict]:
    return {row[0]: dict(zip(FEATURE_COLUMNS, row[1:])) for row in feature_rows(ids, generation)}


@dataclass
class Deployment:
    """The API with its backends, all running: what most tests talk to."""

    api: ApiServer
    settings: Settings
    tmp: Path
    store_kind: str
    log_kind: str

    @property
    def client(self) -> httpx.Client:
        return self.api.client

    def get(self, path: str, key: str | None = API_KEY, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.client.get(path, headers=headers, **kw)

    def post(self, path: str, body, key: str | None = API_KEY, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.client.post(path, json=body, headers=headers, **kw)


def deploy(
    tmp: Path,
    request,
    store_kind: str,
    log_kind: str,
    model_url: str,
    generation: int | None = 0,
    sections: dict | None = None,
    **api,
) -> Deployment:
    from api.main import create_app

    settings = api_settings(
        tmp, store_section(store_kind, tmp, request), log_section(log_kind, tmp, request), model_url, sections, **api
    )
    if generation is not None:
        materialize_generation(settings, generation)
    app = create_app(settings)
    server = serve_app(app)
    return Deployment(server, settings, tmp, store_kind, log_kind)


def teardown_deployment(deployment: Deployment) -> None:
    from api.prediction_log import open_prediction_log
    from features.online import open_store

    deployment.api.stop()
    open_store(deployment.settings).teardown()
    try:
        open_prediction_log(deployment.settings).teardown()
    except Exception:
        pass


# (store, log) pairs: every backend of each is exercised with real HTTP.
COMBINATIONS = [("sqlite", "sqlite"), ("redis", "postgres")]


@pytest.fixture(params=COMBINATIONS, ids=lambda p: f"store={p[0]}-log={p[1]}")
def deployment(request, tmp_path, model_server):
    store_kind, log_kind = request.param
    deployed = deploy(tmp_path, request, store_kind, log_kind, model_server.url)
    yield deployed
    teardown_deployment(deployed)


def read_metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
