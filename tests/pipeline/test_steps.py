"""Steps that need no Spark: ingest (local and S3 on a moto server), the run record, the command line, child settings."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib

import pytest

from configuration.errors import UserError
from configuration.settings import REPO_ROOT, Settings, load_settings
from pipeline import lifecycle, steps
from pipeline.child import settings_toml
from pipeline.record import RunRecord
from tests.training.conftest import moto_url  # noqa: F401 (fixture)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")})


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "in" / "loans.csv"
    path.parent.mkdir()
    path.write_bytes(b"loan_id,id\n1,2\n")
    (tmp_path / "in" / "loans.truth.parquet").write_bytes(b"PAR1")
    return path


def test_ingest_a_local_file_records_its_sha256_and_truth_file(settings, csv):
    got = steps.ingest(settings, str(csv))
    assert got.sha256 == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert got.path == str(csv) and got.size_bytes == csv.stat().st_size
    assert got.truth_path == str(csv.parent / "loans.truth.parquet")
    with pytest.raises(UserError, match="is not a file"):
        steps.ingest(settings, str(csv.parent / "absent.csv"))


def test_ingest_from_s3_fails_once_then_succeeds_on_retry(settings, csv, moto_url):  # noqa: F811
    import boto3

    s3_settings = settings.model_copy(update={"aws": settings.aws.model_copy(update={"endpoint_url": moto_url})})
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket="raw")
    record = RunRecord.open(s3_settings, "retry")
    params = lifecycle.Params(input="s3://raw/drop/loans.csv")
    say = []
    with pytest.raises(lifecycle.StepFailed, match="cannot download s3://raw/drop/loans.csv"):
        lifecycle.run_step(s3_settings, record, "ingest", params, say.append)
    saved = json.loads(record.path.read_text())
    assert saved["steps"]["ingest"]["status"] == "failed" and "404" in saved["steps"]["ingest"]["error"]
    # nothing half-downloaded is left behind
    assert [p.name for p in (record.path.parents[1] / "inputs").iterdir()] == []

    s3.upload_file(str(csv), "raw", "drop/loans.csv")
    s3.upload_file(str(csv.parent / "loans.truth.parquet"), "raw", "drop/loans.truth.parquet")
    output = lifecycle.run_step(s3_settings, RunRecord.open(s3_settings, "retry"), "ingest", params, say.append)
    assert output["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert output["uri"] == "s3://raw/drop/loans.csv"
    local = REPO_ROOT / output["path"]
    assert local.read_bytes() == csv.read_bytes() and local.parent.name == output["sha256"]
    assert (local.parent / "loans.truth.parquet").is_file() and output["truth_path"]
    assert json.loads(record.path.read_text())["steps"]["ingest"]["status"] == "ok"
    assert say[-1].startswith("[pipeline] ingest") and "s3://raw/drop/loans.csv downloaded" in say[-1]


def test_a_changed_input_drops_the_later_outputs_of_the_run(settings, csv):
    record = RunRecord.open(settings, "k1")
    lifecycle.run_step(settings, record, "ingest", lifecycle.Params(input=str(csv)), lambda _: None)
    record.steps["features"] = {"status": "ok", "output": {"run_id": "x", "outcome": "made earlier"}, "inputs": {}}
    record.save()
    lifecycle.run_step(settings, record, "ingest", lifecycle.Params(input=str(csv)), lambda _: None)
    assert "features" in RunRecord.open(settings, "k1").steps  # same file: the later outputs still hold
    csv.write_bytes(b"loan_id,id\n1,3\n")
    lifecycle.run_step(settings, record, "ingest", lifecycle.Params(), lambda _: None)  # --input from the record
    reopened = RunRecord.open(settings, "k1")
    assert "features" not in reopened.steps
    assert reopened.output("ingest")["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "SPARKMAKER_CONFIG": str(REPO_ROOT / "configuration" / "sparkmaker.toml"),
        "SPARKMAKER_PATHS__STATE_DIR": settings.paths.state_dir,
        "SPARKMAKER_PATHS__LAKE": settings.paths.lake,
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_step_before_its_predecessor_exits_2_naming_the_step_to_run_first(settings):
    result = cli(settings, "step", "evaluate", "--run-key", "2021-09-18")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pipeline: error: step evaluate needs the output of step features, which run 2021-09-18 does not have: "
        "run `python -m pipeline step features --run-key 2021-09-18` first"
    ]


def test_command_line_errors_are_one_line(settings, csv):
    assert cli(settings, "run").stderr.strip() == (
        "pipeline: error: run needs --input URI (a local CSV path or s3://bucket/key)"
    )
    bad_key = cli(settings, "step", "ingest", "--run-key", "../x", "--input", str(csv))
    assert bad_key.returncode == 2 and "is not usable as a file name" in bad_key.stderr
    missing = cli(settings, "step", "ingest", "--run-key", "k", "--input", str(csv) + ".gone")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "step ingest failed: input" in missing.stderr and "Traceback" not in missing.stderr
    runs = cli(settings, "runs")
    assert runs.returncode == 0 and "k: failed at ingest: input" in runs.stdout
    assert "python -m pipeline step STEP --run-key KEY" in cli(settings, "--help").stdout


def test_a_child_process_gets_exactly_the_callers_settings(tmp_path):
    built = load_settings(
        paths={"lake": str(tmp_path / "l")},
        serving={"admin_token": 's3cr"et', "port": 18201},
        spark={"extra_conf": {"spark.x": "1"}},
        pipeline={"gate": {"min_auc": 0.6}},
        api={"api_key_hashes": ["a" * 64]},
    )
    assert Settings(**tomllib.loads(settings_toml(built))) == built


def test_deploy_with_the_sagemaker_target_creates_the_endpoint_on_moto(tmp_path, moto_url):  # noqa: F811
    import boto3

    from tests.serving.conftest import make_model_dir
    from training import artifact
    from training.registry import open_registry

    settings = load_settings(
        paths={"lake": str(tmp_path / "lake"), "state_dir": str(tmp_path / "state")},
        aws={"endpoint_url": moto_url, "region": "us-east-1", "s3_bucket": "models"},
        serving={
            "target": "sagemaker",
            "endpoint_name": "pipeline-test",
            "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sparkmaker-serving:1",
            "role_arn": "arn:aws:iam::123456789012:role/sparkmaker",
        },
    )
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket="models")
    model = make_model_dir(tmp_path / "model")
    registry = open_registry(settings)
    version = registry.register(artifact.pack(model, tmp_path / "model.tar.gz"), artifact.read_metadata(model))
    registry.promote(version)

    local = steps.deploy(
        settings.model_copy(update={"serving": settings.serving.model_copy(update={"target": "local"})}),
        steps.Promotion(version, None, True, "promoted"),
        wait_seconds=1,
    )
    assert local.serving is None and "not running" in local.outcome

    done = steps.deploy(settings, steps.Promotion(version, None, True, "promoted"))
    assert done.target == "sagemaker" and done.outcome.startswith(f"endpoint pipeline-test serves v{version}")
    endpoint = boto3.client("sagemaker", endpoint_url=moto_url, region_name="us-east-1").describe_endpoint(
        EndpointName="pipeline-test"
    )
    assert endpoint["EndpointStatus"] == "InService"
    assert [v["VariantName"] for v in endpoint["ProductionVariants"]] == [f"version-{version}"]
    nothing = steps.deploy(settings, steps.Promotion(None, None, False, "none"))
    assert nothing.version is None and nothing.outcome == "nothing to deploy: no model in production"
