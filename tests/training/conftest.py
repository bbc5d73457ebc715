"""Fixtures of the training tests: tiny real models, built with XGBoost, in the artifact format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.contract import FEATURE_COLUMNS


def _make_model_dir(
    path: Path, seed: int = 0, threshold: float = 0.5, roc_auc: float = 0.75, run_id: str = "run-1"
) -> Path:
    import xgboost

    from training import artifact

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, len(FEATURE_COLUMNS)))
    y = (x[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "tree_method": "hist", "seed": seed},
        xgboost.DMatrix(x, label=y, feature_names=list(FEATURE_COLUMNS)),
        num_boost_round=3,
    )
    path.mkdir(parents=True, exist_ok=True)
    artifact.write_booster(booster, path)
    artifact.write_metadata(
        path,
        {
            "threshold": threshold,
            "metrics": {
                "roc_auc": roc_auc,
                "pr_auc": 0.5,
                "log_loss": 0.4,
                "brier": 0.1,
                "precision": 0.5,
                "recall": 0.5,
                "confusion_matrix": {"tp": 1, "fp": 1, "tn": 1, "fn": 1},
                "ceiling_roc_auc": None,
            },
            "hyperparameters": {"num_round": 3},
            "training_data": {
                "run_id": run_id,
                "uri": "/lake/x",
                "rows_train": 150,
                "rows_validation": 50,
                "split": "test",
            },
            "code_version": "unknown",
            "created_at": "2024-01-01T00:00:00Z",
        },
    )
    return path


@pytest.fixture
def make_model_dir():
    """Factory: make_model_dir(path, seed=0, threshold=0.5, roc_auc=0.75, run_id="run-1") -> path."""
    return _make_model_dir


@pytest.fixture
def model_tar(tmp_path, make_model_dir):
    """Factory: model_tar(seed=0, **kw) -> (tar path, metadata) of a fresh tiny model."""
    from training import artifact

    def build(seed: int = 0, **kwargs):
        directory = make_model_dir(tmp_path / f"model-{seed}-{len(list(tmp_path.iterdir()))}", seed=seed, **kwargs)
        tar = artifact.pack(directory, directory.with_suffix(".tar.gz"))
        return tar, artifact.read_metadata(directory)

    return build


# Training tables in the feature job's exact schema (shared/FEATURE-CONTRACT.md section 3).


def training_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("loan_id", pa.int64()),
            ("loan_date", pa.date32()),
            ("nb_previous_loans", pa.int32()),
            ("avg_amount_loans_previous", pa.float64()),
            ("age", pa.int32()),
            ("years_on_the_job", pa.int32()),
            ("flag_own_car", pa.int32()),
            ("status", pa.int32()),
        ]
    )


def synthetic_training(
    rows: int = 4000, seed: int = 0, base_rate: float = 0.08, start: str = "2019-01-01", days: int = 700
):
    """(pyarrow Table, truth Table): a planted logistic signal on the five features, NULLs included."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    nb = rng.poisson(3, rows).astype(np.int32)
    avg = np.where(nb > 0, rng.lognormal(8.5, 0.5, rows), np.nan)
    age = rng.integers(21, 70, rows).astype(np.int32)
    age_null = rng.random(rows) < 0.05
    years = rng.integers(0, 30, rows).astype(np.int32)
    years_null = rng.random(rows) < 0.15
    car = rng.integers(0, 2, rows).astype(np.int32)
    car_null = rng.random(rows) < 0.03
    logit = (
        np.log(base_rate / (1 - base_rate))
        + 1.2 * (nb == 0)
        - 0.04 * (age - 40)
        + 0.9 * years_null
        - 0.6 * car
        + 0.3 * np.where(np.isnan(avg), 0, (np.log(np.nan_to_num(avg, nan=1.0)) - 8.5))
    )
    p_true = 1 / (1 + np.exp(-logit))
    status = (rng.random(rows) < p_true).astype(np.int32)
    dates = np.datetime64(start) + rng.integers(0, days, rows).astype("timedelta64[D]")
    loan_id = rng.permutation(rows).astype(np.int64) + 1
    table = pa.table(
        {
            "id": pa.array(rng.integers(5_008_804, 5_150_487, rows), pa.int64()),
            "loan_id": pa.array(loan_id, pa.int64()),
            "loan_date": pa.array(dates.astype("datetime64[D]"), pa.date32()),
            "nb_previous_loans": pa.array(nb, pa.int32()),
            "avg_amount_loans_previous": pa.array(avg, pa.float64(), from_pandas=True),
            "age": pa.array(age, pa.int32(), mask=age_null),
            "years_on_the_job": pa.array(years, pa.int32(), mask=years_null),
            "flag_own_car": pa.array(car, pa.int32(), mask=car_null),
            "status": pa.array(status, pa.int32()),
        },
        schema=training_schema(),
    )
    truth = pa.table({"loan_id": pa.array(loan_id, pa.int64()), "p_true": pa.array(p_true, pa.float64())})
    return table, truth


def write_parts(table, folder: Path, parts: int = 2) -> Path:
    """Write a table as Spark does: part files plus _SUCCESS and .crc companions."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // parts)
    for index in range(parts):
        piece = table.slice(index * step, step)
        name = f"part-{index:05d}-abc.snappy.parquet"
        pq.write_table(piece, folder / name)
        (folder / f".{name}.crc").write_bytes(b"crc")
    (folder / "_SUCCESS").write_text("")
    return folder


@pytest.fixture(scope="session")
def training_data(tmp_path_factory):
    """A Spark-layout training folder (4,000 rows) and its truth file."""
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("training-data")
    table, truth = synthetic_training()
    write_parts(table, root / "training")
    pq.write_table(truth, root / "data.truth.parquet")
    return {"train": root / "training", "truth": root / "data.truth.parquet", "table": table, "truth_table": truth}


@pytest.fixture
def ml_tree(tmp_path, monkeypatch):
    """An /opt/ml-shaped tree with the toolkit's SM_* variables pointing at it; returns its root."""
    root = tmp_path / "opt" / "ml"
    for folder in ("input/config", "input/data", "model", "output/data"):
        (root / folder).mkdir(parents=True)
    for name in [k for k in __import__("os").environ if k.startswith("SM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SM_INPUT_DIR", str(root / "input"))
    monkeypatch.setenv("SM_MODEL_DIR", str(root / "model"))
    monkeypatch.setenv("SM_OUTPUT_DIR", str(root / "output"))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(root / "output" / "data"))
    return root


@pytest.fixture(scope="session")
def synthetic():
    """The synthetic_training(rows, seed, ...) -> (table, truth) helper, as a fixture (no imports of conftest)."""
    return synthetic_training


@pytest.fixture(scope="session")
def parts_writer():
    """The write_parts(table, folder, parts) helper, as a fixture."""
    return write_parts


@pytest.fixture
def moto_url(monkeypatch):
    """A moto server (a real HTTP server, in a thread) on 127.0.0.1 at a free port; fake credentials."""
    import urllib.request

    from moto.server import ThreadedMotoServer

    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    yield url
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).read()
    server.stop()


@pytest.fixture
def settings_for(tmp_path):
    """Factory: settings with the lake under tmp_path and, optionally, AWS pointed at an emulator."""
    from configuration.settings import load_settings

    def build(endpoint_url: str | None = None, lake: Path | None = None):
        overrides: dict = {"paths": {"lake": str(lake or tmp_path / "lake")}}
        if endpoint_url:
            overrides["aws"] = {"endpoint_url": endpoint_url, "region": "us-east-1"}
        return load_settings(**overrides)

    return build


def open_lake_registry(lake: Path):
    """The registry a `python -m training ... --lake LAKE` command uses (MLflow under <lake>/registry)."""
    from configuration.settings import load_settings
    from training.registry import open_registry

    return open_registry(load_settings(paths={"lake": str(lake)}))


@pytest.fixture
def lake_registry():
    """Factory: lake_registry(lake) -> the registry the CLI uses for that lake."""
    return open_lake_registry
