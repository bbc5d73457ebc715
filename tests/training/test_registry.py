"""The model registry: versions, promotion, rollback, the alias mirror, and concurrency."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import artifact
from training.registry import PRODUCTION, LocalRegistry, RegistryError, open_registry


@pytest.fixture
def registry(tmp_path):
    return LocalRegistry(tmp_path / "registry")


def test_register_numbers_versions_and_keeps_the_tarball_and_the_unpacked_model(registry, model_tar):
    tar1, meta1 = model_tar(seed=1, roc_auc=0.7, run_id="r1")
    tar2, meta2 = model_tar(seed=2, roc_auc=0.8, run_id="r2")
    assert registry.register(tar1, meta1) == "1"
    assert registry.register(tar2, meta2) == "2"
    assert registry.model_tar("1").read_bytes() == tar1.read_bytes()
    assert artifact.read_metadata(registry.model_dir("2")) == meta2
    versions = registry.versions()
    assert [(v.version, v.run_id, v.roc_auc, v.stage) for v in versions] == [("1", "r1", 0.7, None), ("2", "r2", 0.8, None)]
    assert versions[0].created_at == meta1["created_at"]
    assert registry.get("2").model_sha256 == meta2["model_sha256"]
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
    assert registry.alias_path().read_text() == "2\n"
    assert [v.stage for v in registry.versions()] == [None, PRODUCTION, None]
    assert registry.production_dir() == registry.model_dir("2")


def test_rollback_walks_back_through_promotions(registry, model_tar):
    tar, meta = model_tar()
    for _ in range(3):
        registry.register(tar, meta)
    for version in ("1", "2", "3"):
        registry.promote(version)
    assert registry.rollback() == "2"
    assert registry.alias_path().read_text() == "2\n"
    assert registry.rollback() == "1"
    with pytest.raises(RegistryError, match="nothing to roll back to: version 1 is the first"):
        registry.rollback()
    assert registry.alias() == "1"
    actions = [(h["action"], h["version"], h["previous"]) for h in registry.history()]
    assert actions == [("promote", "1", None), ("promote", "2", "1"), ("promote", "3", "2"),
                       ("rollback", "2", "3"), ("rollback", "1", "2")]


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
    for call in (registry.promote, registry.get, registry.model_dir, registry.model_tar):
        with pytest.raises(RegistryError, match=r"no model version .* \(versions: 1\)"):
            call(version)


def test_corrupt_index_is_reported(registry, model_tar):
    tar, meta = model_tar()
    registry.register(tar, meta)
    registry.index_path.write_text("{")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.versions()


def test_model_dir_changed_by_hand_is_detected(registry, model_tar):
    tar, meta = model_tar()
    registry.register(tar, meta)
    (registry.model_dir("1") / "xgboost-model").write_bytes(b"{}")
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        registry.model_dir("1")


def test_open_registry_uses_the_settings_folder(tmp_path):
    from configuration.settings import load_settings

    settings = load_settings(paths={"lake": str(tmp_path / "lake")})
    registry = open_registry(settings)
    assert isinstance(registry, LocalRegistry)
    assert registry.root == tmp_path / "lake" / "registry"


# Concurrency: several processes, each with its own registry object, as CLI calls would be.
# Plain child interpreters (not multiprocessing) so nothing depends on how pytest imports tests.

REPO = Path(__file__).resolve().parents[2]

PROMOTE = """
import sys, time
from pathlib import Path
from training.registry import LocalRegistry
root, go, rounds, *versions = sys.argv[1:]
while not Path(go).exists():
    time.sleep(0.005)
registry = LocalRegistry(Path(root))
for _ in range(int(rounds)):
    for version in versions:
        registry.promote(version)
"""

REGISTER = """
import json, sys, time
from pathlib import Path
from training.registry import LocalRegistry
root, go, tar, metadata, count = sys.argv[1:]
while not Path(go).exists():
    time.sleep(0.005)
registry = LocalRegistry(Path(root))
print(json.dumps([registry.register(Path(tar), json.loads(Path(metadata).read_text())) for _ in range(int(count))]))
"""


def _run_together(tmp_path, argvs: list[list[str]]) -> list[str]:
    go = tmp_path / "go"
    children = [
        subprocess.Popen([sys.executable, "-c", *argv[:1], *argv[1:]], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        for argv in argvs
    ]
    go.write_text("")  # released at once, after all imports are under way
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(out)
    return outputs


def test_concurrent_promotions_from_several_processes_keep_the_index_whole(registry, model_tar, tmp_path):
    tar, meta = model_tar()
    for _ in range(4):
        registry.register(tar, meta)
    plans = [["1", "2"], ["3", "4"], ["2", "3"], ["4", "1"]]
    rounds = 15
    _run_together(tmp_path, [[PROMOTE, str(registry.root), str(tmp_path / "go"), str(rounds), *plan] for plan in plans])
    index = json.loads(registry.index_path.read_text())  # whole, parseable JSON
    history = index["history"]
    # Every promotion was recorded: none lost to a concurrent read-modify-write.
    assert len(history) == len(plans) * rounds * 2
    # The history is a chain: each entry's `previous` is the version the entry before set.
    for before, after in itertools.pairwise(history):
        assert after["previous"] == before["version"]
    assert index["aliases"][PRODUCTION] == history[-1]["version"]
    assert registry.alias_path().read_text().strip() == history[-1]["version"]
    stack = index["production_stack"]
    assert all(a != b for a, b in itertools.pairwise(stack))


def test_concurrent_registrations_get_distinct_versions(registry, model_tar, tmp_path):
    tar, meta = model_tar()
    metadata_file = tmp_path / "meta.json"
    metadata_file.write_text(json.dumps(meta))
    argv = [REGISTER, str(registry.root), str(tmp_path / "go"), str(tar), str(metadata_file), "4"]
    outputs = _run_together(tmp_path, [argv, argv, argv])
    got = [version for out in outputs for version in json.loads(out)]
    assert sorted(got, key=int) == [str(i) for i in range(1, 13)]
    assert [v.version for v in registry.versions()] == [str(i) for i in range(1, 13)]
    for version in got:
        assert artifact.verify_model_dir(registry.model_dir(version))["model_sha256"] == meta["model_sha256"]
