"""Fixtures of the online-store tests: every backend, really started, each test in its own namespace.

`make_store` is parametrized over the backends: the same test runs against SQLite (a file
in the test's folder) and Redis (127.0.0.1:6379, database 15, a key prefix of its own;
skipped with a message naming Redis when none answers there).
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract import FEATURE_COLUMNS, LATEST_COLUMNS

BACKENDS = ("sqlite", "redis")

# The latest-features table's Parquet schema (shared/FEATURE-CONTRACT.md section 4, features.lake).
LATEST_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("as_of", pa.date32()),
        ("nb_previous_loans", pa.int32()),
        ("avg_amount_loans_previous", pa.float64()),
        ("age", pa.int32()),
        ("years_on_the_job", pa.int32()),
        ("flag_own_car", pa.int32()),
    ]
)
assert tuple(LATEST_SCHEMA.names) == LATEST_COLUMNS


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


def store_config(kind: str, tmp_path: Path, redis_url: str | None, **extra):
    if kind == "sqlite":
        from features.online.sqlite_store import SqliteStoreConfig

        return SqliteStoreConfig(path=tmp_path / "online" / "features.sqlite", **extra)
    from features.online.redis_store import RedisStoreConfig

    return RedisStoreConfig(url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:12]}", **extra)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def backend_url(backend: str, request) -> str | None:
    """The Redis URL (database 15) for the redis backend; skips when Redis is down."""
    if backend == "redis":
        return request.getfixturevalue("redis_url")
    return None


@pytest.fixture
def make_store(backend: str, backend_url: str | None, tmp_path: Path):
    """Factory: make_store(**config overrides) -> a store of this test's backend; every one torn down after the test."""
    from features.online import open_store

    made = []

    def make(**extra):
        config = store_config(backend, tmp_path / f"s{len(made)}", backend_url, **extra)
        store = open_store(config=config)
        made.append(store)
        return store

    yield make
    for store in made:
        store.teardown()


@pytest.fixture
def store(make_store):
    return make_store()


def feature_rows(ids, generation: int = 0) -> list[tuple]:
    """Rows (id, *features) whose values encode the generation, with every kind of missing value."""
    rows = []
    for i, ident in enumerate(ids):
        rows.append(
            (
                ident,
                generation * 1000 + i % 50,  # nb_previous_loans: tells the generation apart
                None if i % 5 == 0 else 1234.5 + i + generation / 4,  # avg: NULL for customers with one loan
                18 + i % 60,
                None if i % 7 == 0 else i % 30,  # years_on_the_job: NULL (the 3021 sentinel)
                None if i % 11 == 0 else i % 2,
            )
        )
    return rows


def write_latest_parquet(path: Path, rows: list[tuple], as_of: str, row_group_size: int = 1000) -> None:
    import datetime as dt

    columns = list(zip(*rows)) if rows else [[] for _ in range(1 + len(FEATURE_COLUMNS))]
    data = {
        "id": columns[0],
        "as_of": [dt.date.fromisoformat(as_of)] * len(rows),
        **{name: columns[1 + i] for i, name in enumerate(FEATURE_COLUMNS)},
    }
    table = pa.table({name: data[name] for name in LATEST_SCHEMA.names}, schema=LATEST_SCHEMA)
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet", row_group_size=row_group_size)


def publish_lake_snapshot(
    lake_root: Path,
    run_id: str,
    as_of: str,
    rows: list[tuple],
    dataset: str = "credit_risk",
    manifest_rows: int | None = None,
    current: bool = True,
) -> dict:
    """A snapshot as the feature job lays it out (features.lake): latest Parquet, manifest, CURRENT pointer."""
    snapshot = lake_root / dataset / "snapshots" / run_id
    write_latest_parquet(snapshot / "latest", rows, as_of)
    manifest = {
        "run_id": run_id,
        "as_of": as_of,
        "outputs": {
            "latest": {
                "uri": str(snapshot / "latest"),
                "rows": len(rows) if manifest_rows is None else manifest_rows,
                "table": f"{dataset}.latest_features",
            },
        },
    }
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    if current:
        pointer = {"run_id": run_id, "as_of": as_of, "manifest": str(snapshot / "manifest.json")}
        (lake_root / dataset / "CURRENT.json").write_text(json.dumps(pointer))
    return manifest
