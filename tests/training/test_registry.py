"""The model registry, one suite for every backend: MLflow on SQLite, MLflow on PostgreSQL, the old index.json.

Versions, promotion, rollback, other aliases, annotations, the alias mirror serving polls,
concurrency from several processes. MLflow is real (a SQLite file, or a throwaway PostgreSQL
database `registry_test_<random>` dropped at the end); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from training import artifact
from training.mlflow_registry import MlflowRegistry
from training.registry import PRODUCTION, LocalRegistry, RegistryError, open_registry

from .registry_backends import build

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ["mlflow-sqlite", "mlflow-postgres", "index"]


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory):
    """A migrated, empty MLflow SQLite store, copied by each test (migrating one takes ~3 s)."""
    root = tmp_path_factory.mktemp("mlflow-template")
    MlflowRegistry(root, f"sqlite:///{root / 'mlflow.db'}").versions()
    return root / "mlflow.db"


@pytest.fixture(scope="session")
def postgres_store(postgres_dsn):
    """A throwaway database on the local PostgreSQL; each test uses its own registered model in it."""
    import psycopg

    name = f"registry_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    uri = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    MlflowRegistry(Path("/nonexistent"), uri).versions()  # migrate once
    yield uri
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
def spec(request, tmp_path):
    root = tmp_path / "registry"
    name = f"model-{uuid.uuid4().hex[:8]}"
    if request.param == "index":
        return {"kind": "index", "root": str(root), "uri": "", "name": name}
    if request.param == "mlflow-sqlite":
        db = root / "mlflow" / "mlflow.db"
        db.parent.mkdir(parents=True)
        shutil.copyfile(request.getfixturevalue("empty_mlflow_db"), db)
        return {"kind": "mlflow", "root": str(root), "uri": f"sqlite:///{db}", "name": name}
    return {"kind": "mlflow", "root": str(root), "uri": request.getfixturevalue("postgres_store"), "name": name}


@pytest.fixture
def registry(spec):
    return build(spec)


def mlflow_only(registry):
    if not isinstance(registry, MlflowRegistry):
        pytest.skip("MLflow backend only")


def test_register_numbers_versions_and_keeps_the_tarball_and_the_unpacked_model(registry, model_tar):
    tar1, meta1 = model_tar(seed=1, roc_auc=0.7, run_id="r1")
    tar2, meta2 = model_tar(seed=2, roc_auc=0.8, run_id="r2")
    assert registry.register(tar1, meta1) == "1"
    assert registry.register(tar2, meta2) == "2"
    assert registry.model_tar("1").read_bytes() == tar1.read_bytes()
    assert artifact.read_metadata(registry.model_dir("2")) == meta2
    versions = registry.versions()
    assert [(v.version, v.run_id, v.roc_auc, v.stage) for v in versions] == [
        ("1", "r1", 0.7, None),
        ("2", "r2", 0.8, None),
    ]
    assert versions[0].created_at == meta1["created_at"]
    assert registry.get("2").model_sha256 == meta2["model_sha256"]
    assert registry.get("2").threshold == meta2["threshold"]
    assert registry.metadata("1") == meta1
    assert registry.alias() is None
    assert registry.production_dir() is None


def test_versions_sort_numerically(registry, model_tar):
    tar, meta = model_tar()
    for _ in range(11):
        registry.register(tar, meta)
    assert [v.version for v in registry.versions()] == [str(i) for i in range(1, 12)]


def test_register_with_metadata_of_another_model_fails_and_leaves_nothing(registry, model_tar):
    tar1, _ = model_tar(seed=1)
    _, meta2 = model_tar(seed=2)
    with pytest.raises(RegistryError, match="sha256 differs"):
        registry.register(tar1, meta2)
    assert registry.versions() == []
    assert not (registry.root / "models").exists() or not any((registry.root / "models").iterdir())


def test_register_a_corrupt_tarball_fails_and_leaves_nothing(registry, tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"nope")
    with pytest.raises(artifact.ArtifactError):
        registry.register(bad, {})
    assert registry.versions() == []
    assert not list((registry.root / "staging").iterdir())


def test_register_a_missing_tarball(registry, tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register(tmp_path / "absent.tar.gz", {})


def test_promote_sets_the_alias_and_mirrors_it(registry, model_tar):
    tar, meta = model_tar()
    for _ in range(3):
        registry.register(tar, meta)
    registry.promote("2")
    assert registry.alias(PRODUCTION) == "2"
    assert (registry.root / "aliases" / "production").read_text() == "2\n"
    assert [v.stage for v in registry.versions()] == [None, PRODUCTION, None]
    assert registry.production_dir() == registry.model_dir("2")


def test_rollback_walks_back_through_promotions(registry, model_tar):
    tar, meta = model_tar()
    for _ in range(3):
        registry.register(tar, meta)
    for version in ("1", "2", "3"):
        registry.promote(version)
    assert registry.rollback() == "2"
    assert (registry.root / "aliases" / "production").read_text() == "2\n"
    assert registry.rollback() == "1"
    with pytest.raises(RegistryError, match="nothing to roll back to: version 1 is the first"):
        registry.rollback()
    assert registry.alias() == "1"
    actions = [(h["action"], h["version"], h["previous"]) for h in registry.history()]
    assert actions == [
        ("promote", "1", None),
        ("promote", "2", "1"),
        ("promote", "3", "2"),
        ("rollback", "2", "3"),
        ("rollback", "1", "2"),
    ]


def test_promoting_the_production_model_again_does_not_stack_it(registry, model_tar):
    tar, meta = model_tar()
    registry.register(tar, meta)
    registry.register(tar, meta)
    registry.promote("1")
    registry.promote("2")
    registry.promote("2")
    assert registry.rollback() == "1"


def test_rollback_with_nothing_promoted(registry):
    with pytest.raises(RegistryError, match="no model was promoted yet"):
        registry.rollback()


@pytest.mark.parametrize("version", ["7", "abc", ""])
def test_unknown_version_is_one_clear_line(registry, model_tar, version):
    tar, meta = model_tar()
    registry.register(tar, meta)
    calls = (
        registry.promote,
        registry.get,
        registry.model_dir,
        registry.model_tar,
        registry.run_of,
        lambda v: registry.set_alias("challenger", v),
        lambda v: registry.annotate(v, tags={"a": "b"}),
    )
    for call in calls:
        with pytest.raises(RegistryError, match=r"no model version .* \(versions: 1\)") as caught:
            call(version)
        assert "\n" not in str(caught.value)


def test_other_aliases_move_without_touching_production(registry, model_tar):
    tar, meta = model_tar()
    for _ in range(2):
        registry.register(tar, meta)
    registry.promote("1")
    registry.set_alias("challenger", "2")
    assert registry.alias("challenger") == "2"
    assert registry.alias(PRODUCTION) == "1"
    assert (registry.root / "aliases" / "production").read_text() == "1\n"
    assert registry.history()[-1]["action"] == "alias"
    registry.set_alias(PRODUCTION, "2")  # the same as promote: on the stack, so a rollback returns to 1
    assert registry.rollback() == "1"


def test_annotate_records_tags_metrics_and_files_on_the_version(registry, model_tar, tmp_path):
    tar, meta = model_tar()
    registry.register(tar, meta)
    report = tmp_path / "gate.json"
    report.write_text('{"decision": "promote"}')
    registry.annotate("1", tags={"gate.decision": "promote"}, metrics={"gate.champion_auc": 0.71})
    registry.annotate("1", tags={"gate.decision": "refuse"}, artifacts={"gate.json": report})
    assert registry.tags("1")["gate.decision"] == "refuse"  # what the console's models page reads
    if isinstance(registry, LocalRegistry):
        notes = registry.annotations("1")
        assert notes["tags"] == {"gate.decision": "refuse"} and notes["metrics"] == {"gate.champion_auc": 0.71}
        assert registry.run_of("1") is None
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)  # read back independently
    run = client.get_run(registry.run_of("1"))
    assert run.data.tags["gate.decision"] == "refuse"
    assert run.data.metrics["gate.champion_auc"] == 0.71
    assert "annotations/gate.json" in [f.path for f in client.list_artifacts(run.info.run_id, "annotations")]
    assert client.get_model_version(registry.model_name, "1").tags["gate.decision"] == "refuse"


def test_a_run_holds_params_metrics_lineage_and_the_served_bytes(registry, model_tar, tmp_path):
    mlflow_only(registry)
    from mlflow.tracking import MlflowClient

    tar, meta = model_tar(roc_auc=0.77, run_id="snap-9")
    registry.register(tar, meta)
    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    run = client.get_run(registry.run_of("1"))
    assert run.info.status == "FINISHED"
    assert run.data.params["num_round"] == "3"
    assert run.data.metrics["roc_auc"] == 0.77 and run.data.metrics["brier"] == 0.1
    assert run.data.metrics["confusion_matrix.tp"] == 1.0
    for key in ("snapshot_run_id", "input_uri", "input_sha256", "as_of", "code_version", "training_uri"):
        assert key in run.data.tags and key in client.get_model_version(registry.model_name, "1").tags
    assert run.data.tags["snapshot_run_id"] == "snap-9"
    files = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/xgboost-model", "model/model-metadata.json"} <= files
    stored = Path(client.download_artifacts(run.info.run_id, "model/xgboost-model", str(tmp_path)))
    served = registry.model_dir("1") / "xgboost-model"
    assert (
        hashlib.sha256(stored.read_bytes()).hexdigest()
        == hashlib.sha256(served.read_bytes()).hexdigest()
        == meta["model_sha256"]
    )


def test_a_damaged_local_copy_is_refused_and_fetched_again_once_deleted(registry, model_tar):
    tar, meta = model_tar()
    registry.register(tar, meta)
    (registry.model_dir("1") / "xgboost-model").write_bytes(b"{}")
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        registry.model_dir("1")
    if isinstance(registry, LocalRegistry):  # the old registry has no other copy
        return
    shutil.rmtree(registry.root / "models")
    assert artifact.verify_model_dir(registry.model_dir("1"))["model_sha256"] == meta["model_sha256"]
    for path in Path(registry.artifact_location).rglob("xgboost-model"):  # now the store's copy too
        path.write_bytes(b"{}")
    shutil.rmtree(registry.root / "models")
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        registry.model_dir("1")


def test_the_mirror_heals_when_the_alias_moved_elsewhere(registry, model_tar):
    mlflow_only(registry)
    tar, meta = model_tar()
    registry.register(tar, meta)
    registry.register(tar, meta)
    registry.promote("1")
    registry.client.set_registered_model_alias(registry.model_name, PRODUCTION, "2")  # as MLflow's UI would
    assert registry.alias() == "2"
    assert (registry.root / "aliases" / "production").read_text() == "2\n"


def test_corrupt_index_is_reported(tmp_path, model_tar):
    registry = LocalRegistry(tmp_path / "registry")
    tar, meta = model_tar()
    registry.register(tar, meta)
    registry.index_path.write_text("{")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.versions()


def test_a_corrupt_mlflow_database_is_one_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="MLflow store .* (failed|cannot be used)") as caught:
        MlflowRegistry(tmp_path, f"sqlite:///{db}").versions()
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 600


def test_an_unreachable_tracking_server_is_one_line_within_seconds(tmp_path, monkeypatch):
    import time

    from configuration.network import free_port

    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)  # the defaults quiet() sets, not MLflow's minutes of retries
    started = time.monotonic()
    with pytest.raises(RegistryError, match="MLflow store http://127.0.0.1") as caught:
        MlflowRegistry(tmp_path, f"http://127.0.0.1:{free_port()}").versions()
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 600
    assert time.monotonic() - started < 60


def test_open_registry_is_mlflow_under_the_lake_by_default(tmp_path):
    from configuration.settings import load_settings

    settings = load_settings(paths={"lake": str(tmp_path / "lake")})
    registry = open_registry(settings)
    assert isinstance(registry, MlflowRegistry)
    assert registry.root == tmp_path / "lake" / "registry"
    assert registry.uri == f"sqlite:///{tmp_path / 'lake' / 'registry' / 'mlflow' / 'mlflow.db'}"
    assert registry.model_name == "sparkmaker-credit-risk"
    old = open_registry(load_settings(paths={"lake": str(tmp_path / "lake")}, training={"registry_backend": "index"}))
    assert isinstance(old, LocalRegistry) and old.root == tmp_path / "lake" / "registry"


# Concurrency: several processes, each with its own registry object, as CLI calls would be.
# Plain child interpreters (not multiprocessing) so nothing depends on how pytest imports tests.

PROMOTE = """
import sys, time
from pathlib import Path
from tests.training.registry_backends import build
spec, go, rounds, *versions = sys.argv[1:]
registry = build(spec)
registry.versions()
while not Path(go).exists():
    time.sleep(0.005)
for _ in range(int(rounds)):
    for version in versions:
        registry.promote(version)
"""

REGISTER = """
import json, sys, time
from pathlib import Path
from tests.training.registry_backends import build
spec, go, tar, metadata, count = sys.argv[1:]
registry = build(spec)
registry.versions()
while not Path(go).exists():
    time.sleep(0.005)
print(json.dumps([registry.register(Path(tar), json.loads(Path(metadata).read_text())) for _ in range(int(count))]))
"""


def _run_together(tmp_path, argvs: list[list[str]]) -> list[str]:
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", *argv[:1], *argv[1:]],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for argv in argvs
    ]
    go.write_text("")  # released at once, after all imports are under way
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
        outputs.append(out)
    return outputs


def test_concurrent_promotions_from_several_processes_keep_the_history_whole(registry, spec, model_tar, tmp_path):
    tar, meta = model_tar()
    for _ in range(4):
        registry.register(tar, meta)
    plans = [["1", "2"], ["3", "4"], ["2", "3"], ["4", "1"]]
    rounds = 3
    _run_together(tmp_path, [[PROMOTE, json.dumps(spec), str(tmp_path / "go"), str(rounds), *plan] for plan in plans])
    history = registry.history()
    # Every promotion was recorded: none lost to a concurrent read-modify-write.
    assert len(history) == len(plans) * rounds * 2
    # The history is a chain: each entry's `previous` is the version the entry before set.
    for before, after in itertools.pairwise(history):
        assert after["previous"] == before["version"]
    assert registry.alias(PRODUCTION) == history[-1]["version"]
    assert (registry.root / "aliases" / "production").read_text().strip() == history[-1]["version"]


def test_concurrent_registrations_get_distinct_versions(registry, spec, model_tar, tmp_path):
    tar, meta = model_tar()
    metadata_file = tmp_path / "meta.json"
    metadata_file.write_text(json.dumps(meta))
    argv = [REGISTER, json.dumps(spec), str(tmp_path / "go"), str(tar), str(metadata_file), "3"]
    outputs = _run_together(tmp_path, [argv, argv, argv])
    got = [version for out in outputs for version in json.loads(out)]
    assert sorted(got, key=int) == [str(i) for i in range(1, 10)]
    assert [v.version for v in registry.versions()] == [str(i) for i in range(1, 10)]
    for version in got:
        assert artifact.verify_model_dir(registry.model_dir(version))["model_sha256"] == meta["model_sha256"]
