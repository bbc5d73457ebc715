"""compose/roles.py roles that run without a cluster: publish (against a moto
server) and the health check."""

from __future__ import annotations

import json
import socket

import boto3
import pytest

from configuration.settings import load_settings


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def make_lake(root, run_ids):
    """A lake with snapshots laid out as features/lake.py writes them (contents are opaque bytes here)."""
    dataset = root / "credit_risk"
    for run_id in run_ids:
        snapshot = dataset / "snapshots" / run_id
        for table in ("training", "latest", "rejects"):
            (snapshot / table).mkdir(parents=True)
            (snapshot / table / "part-00000.parquet").write_bytes(f"{run_id}/{table}".encode() * 10)
            (snapshot / table / ".part-00000.parquet.crc").write_bytes(b"crc")
            (snapshot / table / "_SUCCESS").write_bytes(b"")
        manifest = {
            "run_id": run_id,
            "input": {"uri": "/data/in.csv"},
            "outputs": {t: {"uri": str(snapshot / t), "rows": 1} for t in ("training", "latest", "rejects")},
        }
        (snapshot / "manifest.json").write_text(json.dumps(manifest))
    current = run_ids[-1]
    (dataset / "CURRENT.json").write_text(
        json.dumps(
            {
                "run_id": current,
                "as_of": "2021-09-18",
                "manifest": str(dataset / "snapshots" / current / "manifest.json"),
            }
        )
    )


def test_publish_copies_snapshots_rewrites_uris_and_keeps_what_is_there(container_module, moto_url, aws_env, tmp_path):
    lake = tmp_path / "lake"
    make_lake(lake, ["20210901T000000Z-aaaaaa"])
    settings = load_settings(paths={"lake": str(lake)}, aws={"endpoint_url": moto_url, "s3_bucket": "lake-test"})

    uploaded, kept = container_module.publish_snapshots(settings, "lake")
    # 3 tables x (part + _SUCCESS) + manifest + CURRENT.json; checksum files stay behind
    assert (uploaded, kept) == (8, 0)

    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="lake-test")["Contents"]}
    local = {f"lake/{p.relative_to(lake)}" for p in lake.rglob("*") if p.is_file() and not p.name.endswith(".crc")}
    assert keys == local
    body = s3.get_object(
        Bucket="lake-test", Key="lake/credit_risk/snapshots/20210901T000000Z-aaaaaa/latest/part-00000.parquet"
    )
    assert (
        body["Body"].read()
        == (lake / "credit_risk/snapshots/20210901T000000Z-aaaaaa/latest/part-00000.parquet").read_bytes()
    )
    manifest = json.loads(
        s3.get_object(Bucket="lake-test", Key="lake/credit_risk/snapshots/20210901T000000Z-aaaaaa/manifest.json")[
            "Body"
        ].read()
    )
    assert (
        manifest["outputs"]["latest"]["uri"]
        == "s3a://lake-test/lake/credit_risk/snapshots/20210901T000000Z-aaaaaa/latest"
    )
    assert manifest["input"]["uri"] == "/data/in.csv"  # outside the lake: left alone
    current = json.loads(s3.get_object(Bucket="lake-test", Key="lake/credit_risk/CURRENT.json")["Body"].read())
    assert current["manifest"] == "s3a://lake-test/lake/credit_risk/snapshots/20210901T000000Z-aaaaaa/manifest.json"

    # A second snapshot: only its files and the pointer go up.
    make_lake(lake, ["20210902T000000Z-bbbbbb"])
    uploaded, kept = container_module.publish_snapshots(settings, "lake")
    assert (uploaded, kept) == (8, 7)
    current = json.loads(s3.get_object(Bucket="lake-test", Key="lake/credit_risk/CURRENT.json")["Body"].read())
    assert current["run_id"] == "20210902T000000Z-bbbbbb"


def test_publish_without_an_endpoint_is_a_one_line_error(container_module):
    from configuration.errors import UserError

    # The suite's settings have no aws.endpoint_url (tests/conftest.py clears SPARKMAKER_*).
    with pytest.raises(UserError, match="needs aws.endpoint_url and aws.s3_bucket"):
        container_module.main(["publish"])


def test_healthcheck_answers_by_exit_code(container_module):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert container_module.main(["healthcheck", "tcp", f"127.0.0.1:{port}"]) == 0
    assert container_module.main(["healthcheck", "tcp", f"127.0.0.1:{port}"]) == 1
    assert container_module.main(["healthcheck", "http", f"http://127.0.0.1:{port}/"]) == 1
