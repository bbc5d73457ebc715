"""`python -m training sagemaker`: run the training image as a SageMaker training job, then register its model.

Uses the sagemaker SDK v3 resource API (`sagemaker.core.resources.TrainingJob.create`):
the image runs with its own entry point (`train`, as SageMaker starts a bring-your-own
container), channels are S3 prefixes in File mode, hyperparameters strings. When the job
completes, its `model.tar.gz` is downloaded, verified and registered; when it fails, the
job's FailureReason (the container's /opt/ml/output/failure) is reported in one line.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from configuration.errors import UserError
from training import artifact
from training.aws import download_object, explain, session, split_s3
from training.hyperparameters import parse_hyperparameters, to_strings
from training.local import Registered, register_with_policy, run_id_in
from training.registry import ModelRegistry

TERMINAL = ("Completed", "Failed", "Stopped")
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "ceiling_roc_auc")


@dataclass(frozen=True)
class JobRequest:
    image_uri: str
    role_arn: str
    train: str
    output: str
    instance_type: str
    validation: str | None = None
    truth: str | None = None
    hyperparameters: dict[str, str] | None = None
    job_name: str | None = None
    max_runtime_seconds: int = 3600
    volume_size_gb: int = 30


def job_name(prefix: str = "sparkmaker-training") -> str:
    """Unique, within SageMaker's 63 characters [a-zA-Z0-9-]."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


def _check(request: JobRequest) -> None:
    if not request.image_uri:
        raise UserError("no training image: pass --image-uri or set training.image_uri (an ECR image URI)")
    if not request.role_arn:
        raise UserError("no IAM role: pass --role or set training.role_arn (a role SageMaker can assume)")
    if not request.role_arn.startswith("arn:"):
        raise UserError(f"--role {request.role_arn!r} is not a role ARN (arn:aws:iam::<account>:role/<name>)")
    for name, uri in (
        ("train", request.train),
        ("output", request.output),
        ("validation", request.validation),
        ("truth", request.truth),
    ):
        if uri is not None and not uri.startswith("s3://"):
            raise UserError(
                f"--{name} {uri!r} is not an s3:// URI: SageMaker reads channels from and writes models to S3"
            )
        if uri is not None:
            split_s3(uri)


def create_job(request: JobRequest, boto_session, region: str):
    """Send CreateTrainingJob through the SDK; return the TrainingJob resource."""
    from sagemaker.core.resources import TrainingJob
    from sagemaker.core.shapes import (
        AlgorithmSpecification,
        Channel,
        DataSource,
        MetricDefinition,
        OutputDataConfig,
        ResourceConfig,
        S3DataSource,
        StoppingCondition,
    )

    def channel(name: str, uri: str) -> Channel:
        return Channel(
            channel_name=name,
            content_type="application/x-parquet",
            input_mode="File",
            data_source=DataSource(
                s3_data_source=S3DataSource(
                    s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type="FullyReplicated"
                )
            ),
        )

    channels = [channel("train", request.train)]
    if request.validation:
        channels.append(channel("validation", request.validation))
    if request.truth:
        channels.append(channel("truth", request.truth))
    return TrainingJob.create(
        training_job_name=request.job_name,
        role_arn=request.role_arn,
        algorithm_specification=AlgorithmSpecification(
            training_image=request.image_uri,
            training_input_mode="File",
            metric_definitions=[
                MetricDefinition(name=f"validation:{m}", regex=f"validation:{m}=([-0-9.eE]+)") for m in METRICS
            ],
        ),
        input_data_config=channels,
        output_data_config=OutputDataConfig(s3_output_path=request.output),
        resource_config=ResourceConfig(
            instance_type=request.instance_type, instance_count=1, volume_size_in_gb=request.volume_size_gb
        ),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=request.max_runtime_seconds),
        hyper_parameters=request.hyperparameters or {},
        session=boto_session,
        region=region,
    )


def wait(job, poll_seconds: float, timeout_seconds: float | None, echo=print) -> str:
    """Poll until the job ends, printing each status change; return the final status."""
    started = time.monotonic()
    last = None
    while True:
        job.refresh()
        status = str(job.training_job_status)
        secondary = str(getattr(job, "secondary_status", "") or "")
        if (status, secondary) != last:
            echo(
                f"  {dt.datetime.now().strftime('%H:%M:%S')}  {status}"
                + (f" / {secondary}" if secondary and secondary != status else "")
            )
            last = (status, secondary)
        if status in TERMINAL:
            return status
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise UserError(
                f"training job {job.training_job_name} is still {status} after {timeout_seconds:.0f} s: "
                "it keeps running on SageMaker; check it in the console or wait longer with --timeout"
            )
        time.sleep(poll_seconds)


def _text(value: Any) -> str:
    text = str(value or "").strip()
    return "" if text.startswith("<sagemaker") or text == "Unassigned()" else text


def train_on_sagemaker(
    settings,
    registry: ModelRegistry,
    request: JobRequest,
    promote: bool,
    poll_seconds: float = 30.0,
    timeout_seconds: float | None = None,
    echo=print,
) -> Registered:
    _check(request)
    hyperparameters = dict(request.hyperparameters or {})
    hyperparameters.setdefault("data_uri", request.train)
    run_id = run_id_in(request.train)
    if run_id:
        hyperparameters.setdefault("data_run_id", run_id)
    parse_hyperparameters(hyperparameters)  # refuse a bad value here rather than after an instance starts
    request = JobRequest(
        **{
            **request.__dict__,
            "hyperparameters": to_strings(hyperparameters),
            "job_name": request.job_name or job_name(),
        }
    )
    logging.getLogger("sagemaker").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    boto_session = session(settings)
    try:
        job = create_job(request, boto_session, settings.aws.region)
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, f"create the training job {request.job_name}") from None
    echo(f"training job {request.job_name} created ({request.instance_type}, image {request.image_uri})")
    try:
        status = wait(job, poll_seconds, timeout_seconds, echo)
    except KeyboardInterrupt:
        raise UserError(
            f"stopped waiting; training job {request.job_name} keeps running on SageMaker "
            f"(stop it with: aws sagemaker stop-training-job --training-job-name {request.job_name})"
        ) from None
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, f"follow the training job {request.job_name}") from None
    if status != "Completed":
        reason = _text(getattr(job, "failure_reason", None)) or "no reason given"
        raise UserError(f"training job {request.job_name} {status.lower()}: {reason}")
    model_uri = _text(getattr(getattr(job, "model_artifacts", None), "s3_model_artifacts", None))
    if not model_uri:
        raise UserError(
            f"training job {request.job_name} completed without a model artifact: check the job in the console"
        )
    echo(f"downloading {model_uri}")
    with tempfile.TemporaryDirectory(prefix="sparkmaker-sagemaker-") as tmp:
        tar = download_object(boto_session.client("s3"), model_uri, Path(tmp) / "model.tar.gz")
        metadata = artifact.unpack(tar, Path(tmp) / "model")
        return register_with_policy(registry, tar, metadata, promote)
