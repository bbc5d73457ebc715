"""Lake file operations through Python and through Hadoop's FileSystem, and missing connectors."""

from __future__ import annotations

import pytest

from configuration.errors import UserError
from features import lake, session


@pytest.fixture(params=["local", "hadoop"])
def store_and_uri(request, spark, tmp_path):
    if request.param == "local":
        return lake.LocalLake(), str(tmp_path / "a" / "CURRENT.json")
    return lake.HadoopLake(spark), f"file://{tmp_path}/a/CURRENT.json"


def test_atomic_write_replaces_read_and_delete(store_and_uri):
    store, uri = store_and_uri
    assert not store.exists(uri)
    store.write_text_atomic(uri, '{"run_id": "one"}')
    store.write_text_atomic(uri, '{"run_id": "two"}')
    assert store.read_text(uri) == '{"run_id": "two"}'
    store.delete(uri)
    assert not store.exists(uri)


def test_a_scheme_without_connector_fails_before_any_work_naming_the_fix(spark):
    with pytest.raises(UserError) as caught:
        session.require_filesystem(spark, "s3a://bucket/lake")
    message = str(caught.value)
    assert message.startswith("no filesystem connector for s3a:// (s3a://bucket/lake)")
    assert "org.apache.hadoop:hadoop-aws:" in message and "spark.jars.packages" in message
    session.require_filesystem(spark, "/local/path")  # local paths need nothing


def test_readers_without_spark_refuse_remote_lakes_in_one_line(spark_settings):
    remote = spark_settings.model_copy(
        update={"paths": spark_settings.paths.model_copy(update={"lake": "hdfs://nn/lake"})}
    )
    with pytest.raises(UserError, match="is not a local path"):
        lake.read_current(remote)
