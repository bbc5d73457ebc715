"""Spark's class archive: named by the Java and jars it was made from, mapped by the driver JVM for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from configuration.settings import REPO_ROOT, load_settings
from features import class_archive, session


@pytest.fixture
def fake_spark(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "spark"
    (home / "jars").mkdir(parents=True)
    for name in ("spark-core.jar", "spark-sql.jar"):
        (home / "jars" / name).write_bytes(b"PK" + name.encode())
    monkeypatch.setattr("features.metastore.spark_home", lambda: home)
    return home


def test_the_archive_name_changes_with_any_jar(fake_spark, tmp_path):
    first = class_archive.archive_path(tmp_path / "cache")
    assert class_archive.archive_path(tmp_path / "cache") == first
    (fake_spark / "jars" / "spark-sql.jar").write_bytes(b"PK a different build")
    changed = class_archive.archive_path(tmp_path / "cache")
    (fake_spark / "jars" / "hadoop-aws.jar").write_bytes(b"PK")
    added = class_archive.archive_path(tmp_path / "cache")
    assert len({first, changed, added}) == 3
    assert first.parent == tmp_path / "cache" / "class-archive" and first.suffix == ".jsa"


def test_the_driver_maps_the_archive_only_when_it_exists_and_the_classpath_allows(fake_spark, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr("features.java_extensions.default_cache", lambda state_dir: cache)
    settings = load_settings(paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")})
    conf = session.session_conf(settings)
    assert session.with_class_archive(conf, settings) == conf  # no archive yet

    archive = class_archive.archive_path(cache)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"")
    options = session.with_class_archive(conf, settings)["spark.driver.extraJavaOptions"].split()
    assert options[-1] == f"-XX:SharedArchiveFile={archive}"
    assert options[:-1] == conf["spark.driver.extraJavaOptions"].split()

    jdbc = {**conf, "spark.driver.extraClassPath": "/usr/share/java/postgresql.jar"}
    assert session.with_class_archive(jdbc, settings) == jdbc
    off = settings.model_copy(update={"spark": settings.spark.model_copy(update={"class_archive": False})})
    assert session.with_class_archive(conf, off) == conf


def test_the_java_options_reach_the_driver_and_the_executors(tmp_path):
    settings = load_settings(
        paths={"lake": str(tmp_path / "lake")},
        spark={"java_options": "-XX:+UseSerialGC -Xss4m"},
        metastore={"kind": "embedded", "derby_dir": str(tmp_path / "ms")},
    )
    conf = session.session_conf(settings)
    driver = conf["spark.driver.extraJavaOptions"].split()
    assert driver == [session.LOG4J_OPTION, f"-Dderby.system.home={tmp_path / 'ms'}", "-XX:+UseSerialGC", "-Xss4m"]
    assert conf["spark.executor.extraJavaOptions"] == "-XX:+UseSerialGC -Xss4m"


@pytest.mark.slow
def test_a_built_archive_is_mapped_by_a_spark_driver(tmp_path):
    """Built for real, then a driver JVM started with -Xshare:on (which refuses to start on an archive it cannot
        map) logs where each class came from: Spark's classes must come from the archive, not the jars (here a
    range query, which the feature job that recorded the archive never ran: a few of its classes are new)."""
    settings = load_settings(paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")})
    lines: list[str] = []
    archive = class_archive.build(settings, tmp_path / "cache", say=lines.append)
    assert archive.is_file() and archive.stat().st_size > 10 * 2**20
    assert lines[-1].startswith(f"class archive {archive}: built in ")
    assert class_archive.build(settings, tmp_path / "cache", say=lines.append) == archive
    assert lines[-1] == f"class archive {archive}: up to date"
    assert not [p for p in archive.parent.iterdir() if p != archive]  # no partial file left

    log = tmp_path / "class-load.log"
    script = (
        "from configuration.settings import load_settings\n"
        "from features.session import build_session\n"
        "spark = build_session(load_settings(), 'archive-check')\n"
        "assert spark.range(1000).selectExpr('sum(id)').first()[0] == 499500\n"
        "spark.stop()\n"
    )
    env = {
        **os.environ,
        "SPARKMAKER_PATHS__LAKE": str(tmp_path / "lake"),
        "SPARKMAKER_PATHS__STATE_DIR": str(tmp_path / "state"),
        "SPARKMAKER_SPARK__CLASS_ARCHIVE": "false",
        "SPARKMAKER_SPARK__JAVA_OPTIONS": f"-XX:SharedArchiveFile={archive} -Xshare:on -Xlog:class+load=info:file={log}",
    }
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, check=True, timeout=300)
    spark_classes = [line for line in log.read_text().splitlines() if " org.apache.spark." in line]
    from_archive = [line for line in spark_classes if "source: shared objects file (top)" in line]
    # The rest are lambdas and generated classes (their source is the class defining them), or read from a jar.
    from_jars = [line for line in spark_classes if "source: file:" in line or "source: jar:" in line]
    assert len(from_archive) > 3000
    assert len(from_jars) < 0.02 * len(from_archive), (len(from_jars), len(from_archive))
