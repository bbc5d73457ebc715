"""serving.native: serving/ensemble.c built once into a folder of this user's own, or None and a warning."""

from __future__ import annotations

import logging
import math
import os
import struct
import sysconfig

import pytest

from serving import native

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "native"
    monkeypatch.setattr(native, "cache_root", lambda: folder)
    native.ensemble.cache_clear()
    yield folder
    native.ensemble.cache_clear()


def built(folder) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{native.MODULE}-*{SUFFIX}"))


def test_it_is_built_once_into_a_private_folder_and_loaded(cache):
    module = native.ensemble()
    assert module is not None and hasattr(module, "predict")
    assert len(built(cache)) == 1
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    first = (cache / built(cache)[0]).stat().st_mtime_ns
    native.ensemble.cache_clear()
    assert native.ensemble() is not None
    assert (cache / built(cache)[0]).stat().st_mtime_ns == first  # not compiled again


def test_a_build_of_another_source_is_replaced(cache):
    cache.mkdir(mode=0o700)
    stale = cache / f"{native.MODULE}-0000000000000000{SUFFIX}"
    stale.write_bytes(b"an older build")
    assert native.ensemble() is not None
    assert not stale.exists() and len(built(cache)) == 1


def test_what_is_built_is_loaded_without_a_compiler(cache, monkeypatch):
    assert native.ensemble() is not None
    native.ensemble.cache_clear()
    monkeypatch.setattr(native, "compiler", lambda: None)
    assert native.ensemble() is not None


def test_a_folder_others_can_write_is_refused(cache, caplog):
    cache.mkdir()
    os.chmod(cache, 0o777)
    with caplog.at_level(logging.WARNING, logger="serving.native"):
        assert native.ensemble() is None
    assert "can be written by other users" in caplog.text and built(cache) == []


def test_no_compiler_means_the_python_evaluator(cache, monkeypatch, caplog):
    monkeypatch.setattr(native, "compiler", lambda: None)
    with caplog.at_level(logging.WARNING, logger="serving.native"):
        assert native.ensemble() is None
    assert "no C compiler" in caplog.text


def test_a_failing_compiler_leaves_nothing_behind(cache, monkeypatch, caplog):
    monkeypatch.setattr(native, "compiler", lambda: "/bin/false")
    with caplog.at_level(logging.WARNING, logger="serving.native"):
        assert native.ensemble() is None
    assert "/bin/false exited 1" in caplog.text
    assert list(cache.iterdir()) == []  # no partial file


def test_it_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv("SPARKMAKER_NATIVE_ENSEMBLE", "0")
    assert native.ensemble() is None
    assert not cache.exists()


def f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def test_the_walk_by_hand(cache):
    module = native.ensemble()
    # Tree 0: x0 < 0.5 ? leaf 1.0 : leaf -1.0 (missing goes right); tree 1 a single leaf 0.25.
    arrays = native.ensemble_arrays(
        [1, -1, -1, -1], [2, -1, -1, -1], [0, 0, 0, 0], [0.5, 1.0, -1.0, 0.25], [0, 0, 0, 0], [0, 3]
    )
    capsule = module.build(*arrays, 0.0, 1)
    # Margins 1.25 (left), -0.75 (right: 0.5 is not below 0.5) and -0.75 (missing, right); 1 / (e^-m + 1) in float32.
    above, below = f32(1 / (f32(math.exp(-1.25)) + 1)), f32(1 / (f32(math.exp(0.75)) + 1))
    assert module.predict(capsule, [[0.0], [0.5], [float("nan")]]) == [above, below, below]
    assert module.predict(capsule, []) == []
    with pytest.raises(ValueError, match="a row has 2 values, the model 1 features"):
        module.predict(capsule, [[0.0, 1.0]])
    with pytest.raises(TypeError):
        module.predict(capsule, [["0.5"]])


def test_trees_it_cannot_walk_safely_are_refused(cache):
    module = native.ensemble()
    # A child before its parent (a loop, were it followed): refused, so Python answers.
    with pytest.raises(ValueError):
        module.build(*native.ensemble_arrays([-1, 0], [-1, 0], [0, 0], [1.0, 0.5], [0, 0], [1]), 0.0, 1)
    with pytest.raises(ValueError):  # a split on a feature the model does not have
        module.build(
            *native.ensemble_arrays([1, -1, -1], [2, -1, -1], [3, 0, 0], [0.5, 1.0, 2.0], [0, 0, 0], [0]), 0.0, 1
        )
