"""Materialization from the lake's Parquet into each backend, its checks, and the two entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from configuration.errors import UserError
from configuration.settings import load_settings
from features.contract import FEATURE_COLUMNS
from features.online.materialize import materialize
from tests.online.conftest import feature_rows, publish_lake_snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]
IDS = list(range(5_100_000, 5_100_000 + 12_000))


def settings_for(lake_root: Path, backend: str, store) -> object:
    online = {"kind": backend, "write_batch_rows": 1000}
    if backend == "redis":
        online.update(redis_url=store.config.url, key_prefix=store.config.key_prefix)
    else:
        online.update(sqlite_path=str(store.config.path))
    return load_settings(
        paths={"lake": str(lake_root), "state_dir": str(lake_root.parent / "state")}, online_store=online
    )


def test_materialize_loads_the_current_snapshot_exactly(store, backend, tmp_path):
    lake_root = tmp_path / "lake"
    manifest = publish_lake_snapshot(lake_root, "20240131T000000Z-abcdef", "2024-01-31", feature_rows(IDS, 4))
    result = materialize(settings_for(lake_root, backend, store), store=store)
    assert (result.snapshot.run_id, result.snapshot.as_of, result.snapshot.rows) == (
        "20240131T000000Z-abcdef",
        "2024-01-31",
        len(IDS),
    )
    # Independent read of the same Parquet with pyarrow's table API.
    table = pq.read_table(manifest["outputs"]["latest"]["uri"]).to_pylist()
    expected = {row["id"]: {name: row[name] for name in FEATURE_COLUMNS} for row in table}
    records = store.online_read(list(expected))
    assert {r.id: r.features for r in records} == expected
    assert {(r.run_id, r.as_of) for r in records} == {("20240131T000000Z-abcdef", "2024-01-31")}


def test_materialize_a_named_snapshot_that_is_not_current(store, backend, tmp_path):
    lake_root = tmp_path / "lake"
    publish_lake_snapshot(lake_root, "run-old", "2024-01-01", feature_rows(IDS[:100], 1))
    publish_lake_snapshot(lake_root, "run-new", "2024-02-01", feature_rows(IDS[:100], 2))
    materialize(settings_for(lake_root, backend, store), "run-old", store=store)
    assert store.online_read([IDS[0]])[0].run_id == "run-old"


def test_a_table_with_a_repeated_id_is_refused_and_changes_nothing(store, backend, tmp_path):
    lake_root = tmp_path / "lake"
    publish_lake_snapshot(lake_root, "run-1", "2024-01-01", feature_rows(IDS[:2000], 1))
    settings = settings_for(lake_root, backend, store)
    materialize(settings, store=store)
    rows = feature_rows(IDS[:2000], 2)
    publish_lake_snapshot(lake_root, "run-2", "2024-02-01", rows + [rows[1500]])
    with pytest.raises(UserError, match=f"has id {IDS[1500]} twice"):
        materialize(settings, store=store)
    assert store.current_snapshot().run_id == "run-1"
    assert list(store.snapshot_states().values()) == ["current"]


def test_a_row_count_other_than_the_manifests_is_refused(store, backend, tmp_path):
    lake_root = tmp_path / "lake"
    publish_lake_snapshot(lake_root, "run-1", "2024-01-01", feature_rows(IDS[:500]), manifest_rows=501)
    with pytest.raises(UserError, match="holds 500 rows, its manifest says 501"):
        materialize(settings_for(lake_root, backend, store), store=store)
    assert store.current_snapshot() is None


def test_no_snapshot_in_the_lake_is_one_clear_error(store, backend, tmp_path):
    with pytest.raises(UserError, match="no feature snapshot .* yet: run the feature job first"):
        materialize(settings_for(tmp_path / "empty-lake", backend, store), store=store)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARKMAKER_")}
    return subprocess.run(
        [sys.executable, "-m", "features", *args],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_materialize_default_and_named_snapshot(tmp_path):
    """`python -m features materialize` on a local lake: no Spark, SQLite store under the lake by default."""
    from features.online import open_store
    from features.online.sqlite_store import SqliteStoreConfig

    lake_root = tmp_path / "lake"
    publish_lake_snapshot(lake_root, "run-a", "2024-01-01", feature_rows(IDS[:300], 1), current=False)
    publish_lake_snapshot(lake_root, "run-b", "2024-02-01", feature_rows(IDS[:300], 2))
    env = {"SPARKMAKER_CONFIG": str(REPO_ROOT / "configuration" / "sparkmaker.toml")}
    done = _cli("materialize", "--lake", str(lake_root), env=env)
    assert done.returncode == 0, done.stderr
    assert "online store: snapshot run-b (as of 2024-02-01) is current, 300 customers" in done.stdout
    store = open_store(config=SqliteStoreConfig(path=lake_root / "online" / "features.sqlite"))
    assert store.online_read([IDS[0]])[0].features["nb_previous_loans"] == 2000

    done = _cli("materialize", "--snapshot", "run-a", "--lake", str(lake_root), env=env)
    assert done.returncode == 0, done.stderr
    assert store.online_read([IDS[0]])[0].run_id == "run-a"

    done = _cli("materialize", "--snapshot", "run-zzz", "--lake", str(lake_root), env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"features: error: no snapshot run-zzz in {lake_root}/credit_risk: list them with python -m features snapshots"
    ]
    assert store.online_read([IDS[0]])[0].run_id == "run-a"


def test_cli_materialize_with_redis_down_is_one_line(tmp_path):
    from tests.online.conftest import closed_port

    lake_root = tmp_path / "lake"
    publish_lake_snapshot(lake_root, "run-a", "2024-01-01", feature_rows(IDS[:10]))
    env = {
        "SPARKMAKER_CONFIG": str(REPO_ROOT / "configuration" / "sparkmaker.toml"),
        "SPARKMAKER_ONLINE_STORE__KIND": "redis",
        "SPARKMAKER_ONLINE_STORE__REDIS_URL": f"redis://127.0.0.1:{closed_port()}/15",
    }
    done = _cli("materialize", "--lake", str(lake_root), env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error: the Redis online store at redis://127.0.0.1:")
    assert "not available" in lines[0]
