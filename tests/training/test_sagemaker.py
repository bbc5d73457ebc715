"""`python -m training sagemaker` against moto in server mode, with the training service's part played here.

moto answers the SageMaker API (CreateTrainingJob, DescribeTrainingJob) but runs nothing
and marks every job Completed at once. `TrainingService` below does what SageMaker would
between those calls: it holds new jobs InProgress, downloads their channels from moto's S3
into an /opt/ml tree, writes the config files, runs the training entry point as a process,
uploads /opt/ml/model as model.tar.gz, and sets the job Completed, or Failed with the
container's /opt/ml/output/failure as FailureReason. Only moto's in-memory job records are
touched (status, failure reason); every request from the launcher goes over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from training.mlflow_registry import MlflowRegistry

from .conftest import open_lake_registry

REPO = Path(__file__).resolve().parents[2]
ACCOUNT, REGION = "123456789012", "us-east-1"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/sparkmaker-training:test"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/sparkmaker-training"


class TrainingService:
    def __init__(self, url: str) -> None:
        from moto.backends import get_backend
        from moto.sagemaker.models import FakeTrainingJob

        original = FakeTrainingJob.__init__

        def starts_in_progress(job, *args, **kwargs):
            original(job, *args, **kwargs)
            job.training_job_status, job.secondary_status = "InProgress", "Starting"

        FakeTrainingJob.__init__ = starts_in_progress
        self._restore = lambda: setattr(FakeTrainingJob, "__init__", original)
        self.jobs = get_backend("sagemaker")[ACCOUNT][REGION].training_jobs
        self.s3 = boto3.client("s3", endpoint_url=url, region_name=REGION)
        self.handled: set[str] = set()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop running jobs; new jobs behave as moto makes them again (Completed at once, nothing uploaded)."""
        self._restore()
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name, job in list(self.jobs.items()):
                if name not in self.handled and job.training_job_status == "InProgress":
                    self.handled.add(name)
                    try:
                        self._execute(job)
                    except BaseException as exc:  # surfaced by the test, not swallowed
                        self.errors.append(exc)
                        job.training_job_status = "Failed"
                        job.failure_reason = f"emulator error: {exc}"
            time.sleep(0.05)

    def _download(self, uri: str, target: Path) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :].lstrip("/") or Path(item["Key"]).name
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, item["Key"], str(target / relative))

    def _execute(self, job) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "opt" / "ml"
            config = root / "input" / "config"
            config.mkdir(parents=True)
            for channel in job.input_data_config:
                self._download(
                    channel["DataSource"]["S3DataSource"]["S3Uri"], root / "input" / "data" / channel["ChannelName"]
                )
            (config / "hyperparameters.json").write_text(json.dumps(job.hyper_parameters))
            (config / "inputdataconfig.json").write_text(
                json.dumps(
                    {
                        c["ChannelName"]: {
                            "TrainingInputMode": c.get("InputMode", "File"),
                            "ContentType": c.get("ContentType"),
                        }
                        for c in job.input_data_config
                    }
                )
            )
            (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
            job.secondary_status = "Training"
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "SM_INPUT_DIR": str(root / "input"),
                "SM_MODEL_DIR": str(root / "model"),
                "SM_OUTPUT_DIR": str(root / "output"),
            }
            result = subprocess.run(
                [sys.executable, "-m", "training", "train"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode != 0:
                job.failure_reason = (root / "output" / "failure").read_text()[:1024].strip()
                job.training_job_status, job.secondary_status = "Failed", "Failed"
                return
            tar = Path(tmp) / "model.tar.gz"
            with tarfile.open(tar, "w:gz") as archive:  # as SageMaker packs /opt/ml/model
                for path in sorted((root / "model").iterdir()):
                    archive.add(path, arcname=path.name)
            bucket, _, key = job.model_artifacts["S3ModelArtifacts"].removeprefix("s3://").partition("/")
            self.s3.upload_file(str(tar), bucket, key)
            job.training_job_status, job.secondary_status = "Completed", "Completed"


@pytest.fixture
def service(moto_url, training_data):
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    s3.create_bucket(Bucket="data")
    for path in sorted(training_data["train"].iterdir()):
        s3.upload_file(str(path), "data", f"credit_risk/snapshots/r9/training/{path.name}")
    s3.upload_file(str(training_data["truth"]), "data", "truth/data.truth.parquet")
    bad = Path(tempfile.mkdtemp()) / "part-0.parquet"
    pq.write_table(training_data["table"].drop_columns(["age"]), bad)
    s3.upload_file(str(bad), "data", "bad/training/part-0.parquet")
    emulator = TrainingService(moto_url)
    yield emulator
    emulator.stop()
    assert not emulator.errors, emulator.errors


def launch(url: str, lake: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPARKMAKER_AWS__ENDPOINT_URL": url, "SPARKMAKER_AWS__REGION": REGION}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "sagemaker",
            "--lake",
            str(lake),
            "--poll",
            "0.2",
            "--timeout",
            "240",
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_job_is_created_as_asked_and_its_model_registered(moto_url, service, tmp_path):
    result = launch(
        moto_url,
        tmp_path / "lake",
        "--image-uri",
        IMAGE,
        "--role",
        ROLE,
        "--train",
        "s3://data/credit_risk/snapshots/r9/training",
        "--truth",
        "s3://data/truth/data.truth.parquet",
        "--output",
        "s3://data/models",
        "--instance-type",
        "ml.c5.xlarge",
        "--job-name",
        "sm-test-ok",
        "--hp",
        "max_depth=3",
        "--hp",
        "num_round=30",
    )
    assert result.returncode == 0, result.stderr
    assert "training job sm-test-ok created (ml.c5.xlarge" in result.stdout
    assert "InProgress" in result.stdout and "Completed" in result.stdout
    assert "registered model version 1" in result.stdout and "version 1 is now the production model" in result.stdout

    # What moto received.
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_url, region_name=REGION)
    job = sagemaker.describe_training_job(TrainingJobName="sm-test-ok")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert job["RoleArn"] == ROLE
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://data/models"
    assert job["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge" and job["ResourceConfig"]["InstanceCount"] == 1
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    channels = {c["ChannelName"]: c for c in job["InputDataConfig"]}
    assert set(channels) == {"train", "truth"}
    assert channels["train"]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://data/credit_risk/snapshots/r9/training",
        "S3DataDistributionType": "FullyReplicated",
    }
    assert channels["train"]["InputMode"] == "File" and channels["train"]["ContentType"] == "application/x-parquet"
    assert job["HyperParameters"] == {
        "max_depth": "3",
        "num_round": "30",
        "data_uri": "s3://data/credit_risk/snapshots/r9/training",
        "data_run_id": "r9",
    }
    assert all(isinstance(v, str) for v in job["HyperParameters"].values())

    # The registered model is the one the job trained, with its hyperparameters.
    registry = open_lake_registry(tmp_path / "lake")
    metadata = registry.metadata("1")
    assert metadata["hyperparameters"]["max_depth"] == 3
    assert metadata["training_data"]["uri"] == "s3://data/credit_risk/snapshots/r9/training"
    assert metadata["training_data"]["run_id"] == "r9"
    assert registry.get("1").run_id == "r9"
    assert metadata["metrics"]["ceiling_roc_auc"] is not None
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    uploaded = s3.get_object(Bucket="data", Key="models/sm-test-ok/output/model.tar.gz")["Body"].read()
    assert registry.model_tar("1").read_bytes() == uploaded


def test_a_failed_job_reports_its_failure_reason(moto_url, service, tmp_path):
    result = launch(
        moto_url,
        tmp_path / "lake",
        "--image-uri",
        IMAGE,
        "--role",
        ROLE,
        "--train",
        "s3://data/bad/training",
        "--output",
        "s3://data/models",
        "--job-name",
        "sm-test-bad",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "training: error: training job sm-test-bad failed: channel 'train' lacks the column age: "
        "it must hold the feature job's training table"
    )
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_url, region_name=REGION)
    assert sagemaker.describe_training_job(TrainingJobName="sm-test-bad")["TrainingJobStatus"] == "Failed"
    assert open_lake_registry(tmp_path / "lake").versions() == []


def test_completed_without_a_model_file(moto_url, service, settings_for, tmp_path):
    """A job that reports success but left no model.tar.gz (moto's own behaviour, no service): one clear line."""
    from configuration.errors import UserError
    from training.sagemaker_job import JobRequest, train_on_sagemaker

    service.stop()  # moto's default from here: jobs are Completed at once, with no artifact uploaded
    request = JobRequest(
        image_uri=IMAGE,
        role_arn=ROLE,
        train="s3://data/credit_risk/snapshots/r9/training",
        output="s3://data/empty",
        instance_type="ml.m5.large",
        job_name="sm-test-nothing",
    )
    with pytest.raises(UserError, match=r"cannot download s3://data/empty/sm-test-nothing/output/model.tar.gz: 404"):
        train_on_sagemaker(
            settings_for(endpoint_url=moto_url),
            MlflowRegistry(tmp_path / "reg"),
            request,
            promote=False,
            poll_seconds=0.1,
            timeout_seconds=30,
            echo=lambda line: None,
        )


@pytest.mark.parametrize(
    "args, sentence",
    [
        (
            ["--role", ROLE, "--train", "s3://data/credit_risk/snapshots/r9/training", "--output", "s3://data/m"],
            "training: error: no training image: pass --image-uri or set training.image_uri (an ECR image URI)",
        ),
        (
            [
                "--image-uri",
                IMAGE,
                "--role",
                "sparkmaker",
                "--train",
                "s3://data/credit_risk/snapshots/r9/training",
                "--output",
                "s3://data/m",
            ],
            "training: error: --role 'sparkmaker' is not a role ARN (arn:aws:iam::<account>:role/<name>)",
        ),
        (
            ["--image-uri", IMAGE, "--role", ROLE, "--train", "/local/path", "--output", "s3://data/m"],
            "training: error: --train '/local/path' is not an s3:// URI: SageMaker reads channels from and writes models to S3",
        ),
        (
            ["--image-uri", IMAGE, "--role", ROLE, "--train", "s3://data/credit_risk/snapshots/r9/training"],
            "training: error: no output location: pass --output s3://bucket/prefix or set aws.s3_bucket",
        ),
        (
            [
                "--image-uri",
                IMAGE,
                "--role",
                ROLE,
                "--train",
                "s3://data/credit_risk/snapshots/r9/training",
                "--output",
                "s3://data/m",
                "--hp",
                "eta=quick",
            ],
            "training: error: hyperparameter eta='quick' is invalid: not a finite number",
        ),
    ],
)
def test_bad_requests_are_refused_before_any_job_is_created(moto_url, tmp_path, args, sentence):
    result = launch(moto_url, tmp_path / "lake", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == sentence
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_url, region_name=REGION)
    assert sagemaker.list_training_jobs()["TrainingJobSummaries"] == []
