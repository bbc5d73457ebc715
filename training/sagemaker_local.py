"""`python -m training sagemaker --local`: the training image under the SageMaker SDK v3's own local mode.

`ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)` is AWS's harness for trying a training
image before paying for a job: it lays out /opt/ml as SageMaker does, runs the image with
docker compose (v1 `docker-compose` when v2 is missing) and collects /opt/ml/model and
/opt/ml/output into `<root>/compressed_artifacts/model.tar.gz` and `<root>/artifacts/output/`.
Offline, as here, it needs its telemetry off (a config file named by
SAGEMAKER_USER_CONFIG_OVERRIDE), dummy credentials and a region; it does not check the
container's exit code reliably, so the outcome is read from the outputs themselves: the
failure file (the job's FailureReason), else a model.tar.gz that verifies.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError
from training import artifact
from training.hyperparameters import parse_hyperparameters, to_strings

TELEMETRY_OFF = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
DUMMY_ROLE = "arn:aws:iam::111111111111:role/sparkmaker-local-mode"


@dataclass(frozen=True)
class LocalModeResult:
    tar: Path  # model.tar.gz as SageMaker would upload it
    metadata: dict
    root: Path


def offline_environment(root: Path) -> dict[str, str]:
    """What the SDK needs to run without AWS: telemetry off, dummy credentials, a region."""
    config = root / "sagemaker-config.yaml"
    config.write_text(TELEMETRY_OFF, encoding="utf-8")
    return {
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local-mode"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local-mode"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


def run_local_mode(
    image: str, channels: dict[str, Path], hyperparameters: dict[str, str], root: Path, echo=print
) -> LocalModeResult:
    """Train `image` on local channel folders under the SDK's local mode; the verified model, or UserError."""
    if "train" not in channels:
        raise UserError("local mode needs a train channel: pass --train DIR (a folder of Parquet files)")
    for name, path in channels.items():
        if not path.exists():
            raise UserError(f"the {name} channel {path} does not exist")
    parse_hyperparameters(hyperparameters)  # refuse a bad value before a container starts
    root.mkdir(parents=True, exist_ok=True)
    os.environ.update(offline_environment(root))
    logging.getLogger("sagemaker").setLevel(logging.WARNING)
    from sagemaker.core.training.configs import Compute, InputData
    from sagemaker.train.model_trainer import Mode, ModelTrainer

    trainer = ModelTrainer(
        training_image=image,
        training_mode=Mode.LOCAL_CONTAINER,
        role=DUMMY_ROLE,
        compute=Compute(instance_type="local_cpu", instance_count=1),
        local_container_root=str(root),
        hyperparameters=to_strings(hyperparameters),
        base_job_name="sparkmaker-local",
    )
    echo(f"running {image} under SageMaker local mode in {root}")
    inputs = [InputData(channel_name=name, data_source=str(path.resolve())) for name, path in channels.items()]
    try:
        trainer.train(input_data_config=inputs, wait=True)
    except Exception as exc:  # the SDK's own errors (compose missing, engine down): one line
        failure = root / "artifacts" / "output" / "failure"
        if not failure.is_file():
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UserError(f"SageMaker local mode failed: {first}") from None
    return collect(root)


def collect(root: Path) -> LocalModeResult:
    """The outcome from what the job left: its failure file, else its model.tar.gz (verified)."""
    failure = root / "artifacts" / "output" / "failure"
    if failure.is_file():
        raise UserError(
            f"the training job failed: {failure.read_text(encoding='utf-8', errors='replace').strip()[:1024]}"
        )
    tar = root / "compressed_artifacts" / "model.tar.gz"
    if not tar.is_file():
        raise UserError(
            f"local mode left no model.tar.gz in {tar.parent} and no failure file: read the job's output above"
        )
    with tempfile.TemporaryDirectory(prefix="sparkmaker-local-mode-") as tmp:
        metadata = artifact.unpack(tar, Path(tmp) / "model")
    return LocalModeResult(tar, metadata, root)
