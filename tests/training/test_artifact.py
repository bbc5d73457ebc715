"""The model artifact contract: files, metadata, sha256 check, tarball layout, safe unpacking."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
import xgboost

from features.contract import FEATURE_COLUMNS
from training import artifact


def test_feature_dtypes_name_exactly_the_contract_features():
    assert list(artifact.FEATURES) == list(FEATURE_COLUMNS)
    assert set(artifact.FEATURE_DTYPES) == set(FEATURE_COLUMNS)


def test_metadata_holds_every_key_and_the_sha256_of_the_model_file(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    metadata = json.loads((model_dir / artifact.METADATA_FILE).read_text())
    assert set(artifact.METADATA_KEYS) <= set(metadata)
    assert metadata["format_version"] == 1
    assert metadata["model_sha256"] == hashlib.sha256((model_dir / "xgboost-model").read_bytes()).hexdigest()
    assert metadata["feature_names"] == list(FEATURE_COLUMNS)
    assert metadata["learner"] == "xgboost"
    assert artifact.verify_model_dir(model_dir) == metadata


def test_model_file_is_xgboost_json_not_pickle(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    document = json.loads((model_dir / "xgboost-model").read_bytes())
    assert "learner" in document
    assert document["learner"]["feature_names"] == list(FEATURE_COLUMNS)


def test_load_booster_predicts_like_the_saved_one(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m", seed=3)
    booster = artifact.load_booster(model_dir)
    x = np.array([[1.0, np.nan, 30, 2, 1], [-1.0, 5.0, np.nan, np.nan, 0]])
    reference = xgboost.Booster()
    reference.load_model(bytearray((model_dir / "xgboost-model").read_bytes()))
    dm = xgboost.DMatrix(x, feature_names=list(FEATURE_COLUMNS))
    np.testing.assert_array_equal(booster.predict(dm), reference.predict(dm))


def test_write_metadata_without_model_file_fails(tmp_path):
    with pytest.raises(artifact.ArtifactError, match="save the booster"):
        artifact.write_metadata(tmp_path, {})


def test_tampered_model_fails_verification(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    with open(model_dir / "xgboost-model", "ab") as handle:
        handle.write(b" ")
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        artifact.verify_model_dir(model_dir)


@pytest.mark.parametrize("missing", ["xgboost-model", "model-metadata.json"])
def test_missing_file_fails_verification(tmp_path, make_model_dir, missing):
    model_dir = make_model_dir(tmp_path / "m")
    (model_dir / missing).unlink()
    with pytest.raises(artifact.ArtifactError, match=missing):
        artifact.verify_model_dir(model_dir)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(format_version=2), "format_version"),
        (lambda m: m.update(feature_names=["age"]), "features"),
        (lambda m: m.update(threshold=1.5), "threshold"),
        (lambda m: m.pop("metrics"), "lacks metrics"),
    ],
)
def test_bad_metadata_is_one_clear_line(tmp_path, make_model_dir, change, message):
    model_dir = make_model_dir(tmp_path / "m")
    metadata = json.loads((model_dir / "model-metadata.json").read_text())
    change(metadata)
    (model_dir / "model-metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(artifact.ArtifactError, match=message) as info:
        artifact.read_metadata(model_dir)
    assert "\n" not in str(info.value)


def test_metadata_that_is_not_json(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    (model_dir / "model-metadata.json").write_text("{not json")
    with pytest.raises(artifact.ArtifactError, match="not valid JSON"):
        artifact.read_metadata(model_dir)


def test_tarball_is_flat_and_round_trips(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    (model_dir / "model-card.md").write_text("# card\n")
    tar = artifact.pack(model_dir, tmp_path / "out" / "model.tar.gz")
    with tarfile.open(tar) as archive:
        names = sorted(archive.getnames())
        assert all(m.isfile() for m in archive.getmembers())
    assert names == ["model-card.md", "model-metadata.json", "xgboost-model"]
    metadata = artifact.unpack(tar, tmp_path / "unpacked")
    assert metadata["model_sha256"] == artifact.sha256_file(model_dir / "xgboost-model")
    for name in names:
        assert (tmp_path / "unpacked" / name).read_bytes() == (model_dir / name).read_bytes()


def test_pack_is_deterministic(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    first = artifact.pack(model_dir, tmp_path / "a.tar.gz").read_bytes()
    second = artifact.pack(model_dir, tmp_path / "b.tar.gz").read_bytes()
    assert first == second


def test_unpack_accepts_dot_slash_members_as_tar_c_writes_them(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    tar = tmp_path / "dot.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        archive.add(model_dir, arcname=".")
    metadata = artifact.unpack(tar, tmp_path / "out")
    assert metadata["feature_names"] == list(FEATURE_COLUMNS)


def _tar_with(tmp_path, name: str, kind=tarfile.REGTYPE) -> object:
    tar = tmp_path / "evil.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            archive.addfile(info)
        else:
            info.size = 3
            archive.addfile(info, io.BytesIO(b"abc"))
    return tar


@pytest.mark.parametrize(
    "name, kind, message",
    [
        ("../escape", tarfile.REGTYPE, "at their root only"),
        ("/abs/path", tarfile.REGTYPE, "at their root only"),
        ("sub/xgboost-model", tarfile.REGTYPE, "at their root only"),
        ("xgboost-model", tarfile.SYMTYPE, "not a regular file"),
    ],
)
def test_unpack_refuses_unsafe_members(tmp_path, name, kind, message):
    tar = _tar_with(tmp_path, name, kind)
    with pytest.raises(artifact.ArtifactError, match=message):
        artifact.unpack(tar, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_unpack_of_a_file_that_is_not_a_tarball(tmp_path):
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(artifact.ArtifactError, match="not a readable tar.gz"):
        artifact.unpack(bad, tmp_path / "out")


def test_unpack_of_a_tarball_without_the_model(tmp_path):
    tar = _tar_with(tmp_path, "model-metadata.json")
    with pytest.raises(artifact.ArtifactError, match="lacks xgboost-model"):
        artifact.unpack(tar, tmp_path / "out")


def test_unpack_into_a_non_empty_folder_fails(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    tar = artifact.pack(model_dir, tmp_path / "model.tar.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "other").write_text("x")
    with pytest.raises(artifact.ArtifactError, match="not empty"):
        artifact.unpack(tar, tmp_path / "out")


def test_load_booster_on_a_corrupt_model_file_is_one_line(tmp_path, make_model_dir):
    model_dir = make_model_dir(tmp_path / "m")
    (model_dir / "xgboost-model").write_bytes(b'{"garbage": 1}')
    metadata = json.loads((model_dir / "model-metadata.json").read_text())
    metadata["model_sha256"] = artifact.sha256_file(model_dir / "xgboost-model")
    (model_dir / "model-metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(artifact.ArtifactError, match="not an XGBoost model") as info:
        artifact.load_booster(model_dir)
    assert "\n" not in str(info.value)
