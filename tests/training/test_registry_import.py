"""`python -m training registry import`: an index.json registry built by the old code, brought into MLflow once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training import artifact
from training.registry import PRODUCTION, LocalRegistry

from .conftest import open_lake_registry

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def old_registry(root: Path, model_tar, tmp_path) -> LocalRegistry:
    old = LocalRegistry(root)
    for seed in (1, 2, 3):
        tar, meta = model_tar(seed=seed, roc_auc=0.6 + seed / 100, run_id=f"snap-{seed}")
        old.register(tar, meta)
    for version in ("1", "2", "3"):
        old.promote(version)
    old.rollback()  # production 2, stack [1, 2]
    old.set_alias("challenger", "3")
    note = tmp_path / "gate.json"
    note.write_text("{}")
    old.annotate("3", tags={"gate.decision": "refuse"}, metrics={"gate.auc": 0.61}, artifacts={"gate.json": note})
    return old


def test_import_keeps_every_version_alias_and_the_history_and_a_second_import_changes_nothing(tmp_path, model_tar):
    lake = tmp_path / "lake"
    old = old_registry(lake / "registry", model_tar, tmp_path)  # where the old default put it
    index_before = old.index_path.read_bytes()

    hint = cli("models", "--lake", str(lake))
    assert "not imported yet: import it with python -m training registry import" in hint.stdout

    first = cli("registry", "import", "--lake", str(lake))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1].startswith(f"imported 3 versions from {lake / 'registry'}")
    assert first.stderr == ""

    new = open_lake_registry(lake)
    assert [(v.version, v.run_id, v.roc_auc, v.stage) for v in new.versions()] == [
        (v.version, v.run_id, v.roc_auc, v.stage) for v in old.versions()
    ]
    for version in ("1", "2", "3"):
        assert new.model_tar(version).read_bytes() == old.model_tar(version).read_bytes()
        assert artifact.read_metadata(new.model_dir(version)) == old.metadata(version)
        assert new.get(version).registered_at == old.get(version).registered_at
    assert new.alias(PRODUCTION) == "2" and new.alias("challenger") == "3"
    assert (lake / "registry" / "aliases" / "production").read_text() == "2\n"
    assert [(h["action"], h["alias"], h["version"], h["previous"], h["at"]) for h in new.history()] == [
        (h["action"], h["alias"], h["version"], h["previous"], h["at"]) for h in old.history()
    ]
    assert new.rollback() == "1"  # the production stack came along: 1 under 2
    new.promote("2")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=new.uri, registry_uri=new.uri)
    run = client.get_run(new.run_of("3"))
    assert run.data.tags["gate.decision"] == "refuse" and run.data.metrics["gate.auc"] == 0.61
    assert run.data.tags["imported_version"] == "3"
    assert old.index_path.read_bytes() == index_before  # the old registry is left as it was

    assert "not imported yet" not in cli("models", "--lake", str(lake)).stdout
    history_before = new.history()
    second = cli("registry", "import", "--lake", str(lake))
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("already imported: ") and "nothing changed" in second.stdout
    assert len(new.versions()) == 3 and new.history() == history_before


def test_import_into_a_registry_with_its_own_models_renumbers_and_keeps_its_production(tmp_path, model_tar):
    lake = tmp_path / "lake"
    old = old_registry(tmp_path / "elsewhere", model_tar, tmp_path)
    new = open_lake_registry(lake)
    tar, meta = model_tar(seed=9)
    new.register(tar, meta)
    new.promote("1")
    done = cli("registry", "import", "--from", str(old.root), "--lake", str(lake))
    assert done.returncode == 0, done.stderr
    assert "already had a production model (version 1): it stays production" in done.stdout
    assert [v.version for v in new.versions()] == ["1", "2", "3", "4"]
    for old_version, new_version in (("1", "2"), ("2", "3"), ("3", "4")):
        assert new.model_tar(new_version).read_bytes() == old.model_tar(old_version).read_bytes()
    assert new.alias(PRODUCTION) == "1" and new.alias("challenger") == "4"


def test_import_from_a_folder_without_an_index_is_one_line(tmp_path):
    done = cli("registry", "import", "--from", str(tmp_path / "nothing"), "--lake", str(tmp_path / "lake"))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"training: error: no index.json registry in {tmp_path / 'nothing'}: pass the folder that holds the old index.json with --from"
    )
