"""`python -m training local`: staging (local and s3:// against moto), the child run, registration, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from training import artifact, local
from training.aws import AwsError, download_prefix

from .conftest import open_lake_registry

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def test_local_runs_registers_and_promotes_only_the_first(tmp_path, training_data):
    lake = tmp_path / "lake"
    first = cli(
        "local", "--train", str(training_data["train"]), "--truth", str(training_data["truth"]), "--lake", str(lake)
    )
    assert first.returncode == 0, first.stderr
    assert "registered model version 1: ROC-AUC" in first.stdout and "(ceiling 0." in first.stdout
    assert "version 1 is now the production model" in first.stdout
    assert "[train] model written to" in first.stdout  # the child's log is passed through

    second = cli(
        "local", "--train", str(training_data["train"]), "--lake", str(lake), "--hp", "max_depth=3", "--hp", "seed=1"
    )
    assert second.returncode == 0, second.stderr
    assert "registered model version 2" in second.stdout
    assert "production model stays version 1; promote this one with: python -m training promote 2" in second.stdout

    registry = open_lake_registry(lake)
    assert [(v.version, v.stage) for v in registry.versions()] == [("1", "production"), ("2", None)]
    assert registry.metadata("2")["hyperparameters"]["max_depth"] == 3
    assert registry.metadata("1")["metrics"]["ceiling_roc_auc"] is not None

    listing = cli("models", "--lake", str(lake))
    lines = listing.stdout.strip().splitlines()
    assert lines[0].split() == ["VERSION", "STAGE", "CREATED", "DATA", "SNAPSHOT", "ROC-AUC", "THRESHOLD"]
    assert lines[1].split()[:2] == ["1", "production"] and lines[2].split()[:2] == ["2", "-"]
    assert f"{registry.get('2').roc_auc:.4f}" in lines[2]

    promoted = cli("promote", "2", "--lake", str(lake))
    assert promoted.stdout.strip() == "version 2 is now the production model (was 1)"
    assert (lake / "registry" / "aliases" / "production").read_text() == "2\n"
    rolled = cli("rollback", "--lake", str(lake))
    assert rolled.stdout.strip() == "rolled back: version 1 is the production model again (was 2)"
    again = cli("rollback", "--lake", str(lake))
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "training: error: nothing to roll back to: version 1 is the first production model; "
        "promote a version with python -m training promote VERSION"
    )
    unknown = cli("promote", "9", "--lake", str(lake))
    assert unknown.returncode == 2 and unknown.stderr.startswith("training: error: no model version '9'")


INPUT_SHA256 = "5e" * 32


def _fake_feature_run(lake: Path, training_data, run_id: str = "20240101T000000Z-abc123") -> Path:
    """The lake layout the feature job leaves (features/lake.py): CURRENT.json -> manifest -> training/."""
    import shutil

    snapshot = lake / "credit_risk" / "snapshots" / run_id
    shutil.copytree(training_data["train"], snapshot / "training")
    csv = lake.parent / "input.csv"
    csv.write_text("not read\n")
    (lake.parent / "input.truth.parquet").write_bytes(training_data["truth"].read_bytes())
    manifest = {
        "run_id": run_id,
        "as_of": "2024-01-01",
        "input": {"uri": str(csv), "sha256": INPUT_SHA256},
        "outputs": {"training": {"uri": str(snapshot / "training"), "rows": 4000}},
    }
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    (lake / "credit_risk" / "CURRENT.json").write_text(
        json.dumps({"run_id": run_id, "as_of": "2024-01-01", "manifest": str(snapshot / "manifest.json")})
    )
    return snapshot


def test_default_train_is_the_current_snapshot_with_its_truth(tmp_path, training_data):
    lake = tmp_path / "lake"
    _fake_feature_run(lake, training_data)
    result = cli("local", "--lake", str(lake), "--hp", "num_round=20", "--hp", "early_stopping_rounds=0")
    assert result.returncode == 0, result.stderr
    assert (
        "training on " + str(lake / "credit_risk" / "snapshots" / "20240101T000000Z-abc123" / "training")
        in result.stdout
    )
    assert "using the truth file" in result.stdout
    registry = open_lake_registry(lake)
    metadata = registry.metadata("1")
    assert metadata["training_data"]["run_id"] == "20240101T000000Z-abc123"
    assert metadata["metrics"]["ceiling_roc_auc"] is not None
    # The MLflow run and the model version carry the lineage: snapshot, its input and as_of, the code.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    run = client.get_run(registry.run_of("1"))
    lineage = {
        "snapshot_run_id": "20240101T000000Z-abc123",
        "input_uri": str(lake.parent / "input.csv"),
        "input_sha256": INPUT_SHA256,
        "as_of": "2024-01-01",
        "code_version": metadata["code_version"],
        "training_uri": str(lake / "credit_risk" / "snapshots" / "20240101T000000Z-abc123" / "training"),
    }
    version_tags = client.get_model_version(registry.model_name, "1").tags
    for key, value in lineage.items():
        assert run.data.tags[key] == value and version_tags[key] == value
    assert run.data.metrics["ceiling_gap"] == pytest.approx(
        metadata["metrics"]["ceiling_roc_auc"] - metadata["metrics"]["roc_auc"]
    )
    assert {"model/roc.png", "model/calibration.png", "model/model-card.md"} <= {
        f.path for f in client.list_artifacts(run.info.run_id, "model")
    }


def test_no_snapshot_yet(tmp_path):
    result = cli("local", "--lake", str(tmp_path / "lake"))
    assert result.returncode == 2
    assert result.stderr.startswith("training: error: no feature snapshot in ")
    assert "run the feature job first" in result.stderr


@pytest.mark.parametrize(
    "args, sentence",
    [
        (["--hp", "max_depth=x"], "training: error: hyperparameter max_depth='x' is invalid: not a whole number"),
        (["--hp", "max_depth"], "training: error: --hp 'max_depth' is not key=value (e.g. --hp max_depth=3)"),
        (["--validation", "/no/such/folder"], "training: error: --validation /no/such/folder: no such file or folder"),
    ],
)
def test_bad_arguments_fail_before_training(tmp_path, training_data, args, sentence):
    result = cli("local", "--train", str(training_data["train"]), "--lake", str(tmp_path / "lake"), *args)
    assert result.returncode == 2
    assert result.stderr.strip() == sentence
    assert open_lake_registry(tmp_path / "lake").versions() == []


def test_a_failed_training_registers_nothing(tmp_path, training_data):
    table = training_data["table"].drop_columns(["age"])
    (tmp_path / "bad").mkdir()
    pq.write_table(table, tmp_path / "bad" / "part-0.parquet")
    result = cli("local", "--train", str(tmp_path / "bad"), "--lake", str(tmp_path / "lake"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "training: error: training failed: channel 'train' lacks the column age: it must hold the feature job's training table"
    )
    assert open_lake_registry(tmp_path / "lake").versions() == []


# s3:// channels, staged as SageMaker's File mode does, against moto.


def _upload_snapshot(url: str, training_data, bucket: str = "lake-bucket") -> str:
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    prefix = "credit_risk/snapshots/r1/training"
    for path in sorted(training_data["train"].iterdir()):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/", Body=b"")  # a console-made "folder" marker
    s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}/nested/deeper/extra.parquet",
        Body=(training_data["train"] / "part-00000-abc.snappy.parquet").read_bytes(),
    )
    s3.upload_file(str(training_data["truth"]), bucket, "truth/data.truth.parquet")
    return f"s3://{bucket}/{prefix}"


def test_s3_prefix_is_staged_like_file_mode(moto_url, training_data, tmp_path):
    uri = _upload_snapshot(moto_url, training_data)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    count = download_prefix(s3, uri, tmp_path / "train")
    names = sorted(p.relative_to(tmp_path / "train").as_posix() for p in (tmp_path / "train").rglob("*") if p.is_file())
    expected = sorted([p.name for p in training_data["train"].iterdir()] + ["nested/deeper/extra.parquet"])
    assert names == expected and count == len(expected)
    assert (tmp_path / "train" / "_SUCCESS").read_bytes() == (training_data["train"] / "_SUCCESS").read_bytes()


def test_train_local_from_s3(moto_url, training_data, settings_for, tmp_path):
    uri = _upload_snapshot(moto_url, training_data)
    settings = settings_for(endpoint_url=moto_url)
    registry = open_lake_registry(tmp_path)
    result = local.train_local(
        settings,
        registry,
        local.source_for(uri),
        None,
        "s3://lake-bucket/truth/data.truth.parquet",
        {"num_round": "20", "early_stopping_rounds": "0"},
        promote=False,
        keep=tmp_path / "kept",
    )
    assert (result.version, result.promoted, result.production) == ("1", True, "1")
    metadata = registry.metadata("1")
    assert metadata["training_data"]["uri"] == uri
    assert metadata["training_data"]["run_id"] == "r1"  # from the lake layout of the URI
    # The extra nested copy of part 0 was read too: 4,000 rows plus that part's 2,000.
    assert metadata["training_data"]["rows_train"] + metadata["training_data"]["rows_validation"] == 6000
    assert metadata["metrics"]["ceiling_roc_auc"] is not None
    kept = tmp_path / "kept"
    assert json.loads((kept / "input" / "config" / "hyperparameters.json").read_text())["num_round"] == "20"
    assert set(json.loads((kept / "input" / "config" / "inputdataconfig.json").read_text())) == {"train", "truth"}
    assert artifact.verify_model_dir(kept / "model")["model_sha256"] == metadata["model_sha256"]


@pytest.mark.parametrize(
    "uri, sentence",
    [
        ("s3://no-such-bucket/x", "cannot download s3://no-such-bucket/x: NoSuchBucket"),
        ("s3://lake-bucket/nothing/here", "there are no objects under s3://lake-bucket/nothing/here: check the URI"),
        ("s3:/bad", "'s3:/bad' is not an s3://bucket/prefix URI"),
    ],
)
def test_s3_problems_are_one_sentence(moto_url, training_data, tmp_path, uri, sentence):
    _upload_snapshot(moto_url, training_data)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    with pytest.raises(AwsError) as info:
        download_prefix(s3, uri, tmp_path / "train")
    assert sentence in str(info.value)
