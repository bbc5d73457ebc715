"""Where MLflow keeps its runs and registered models, decided once for every caller.

`tracking_uri(settings)` is the one answer (training, the registry, the pipeline's gate, the
`mlflow server` the local stack starts): `mlflow.tracking_uri` when set, else a SQLite file
in the registry folder under the lake (`<lake>/registry/mlflow/mlflow.db`), so the local stack
needs no server. New experiments keep their artifacts at `artifact_location(settings)`
(`<lake>/registry/mlflow/artifacts`). One folder holds the whole registry (store, artifacts,
alias mirror, unpacked models), so `training.registry_dir` moves all of it at once.

`client(settings)` returns an `MlflowClient` on that store after `quiet()`: MLflow and the
sagemaker-mlflow plugin otherwise log warnings and migration chatter on every call.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from configuration.errors import UserError

# Loggers that print per-call noise: alembic's migration steps on a fresh SQLite store, the
# sagemaker-mlflow plugin's "not a SageMaker ARN" warning on every call over http, MLflow's own.
NOISY_LOGGERS = ("alembic", "mlflow", "sagemaker_mlflow", "sagemaker", "botocore.credentials")


class TrackingError(UserError):
    """The MLflow tracking store cannot be reached or read."""


def store_dir(settings) -> Path:
    """The local folder of the default store: <registry_dir>/mlflow (default <lake>/registry/mlflow)."""
    return settings.registry_dir() / "mlflow"


def tracking_uri(settings) -> str:
    """The tracking (and model registry) URI every process of the project uses."""
    configured = settings.mlflow.tracking_uri.strip()
    if configured:
        return configured
    return f"sqlite:///{store_dir(settings) / 'mlflow.db'}"


def artifact_location(settings) -> str | None:
    """Where a new experiment keeps its artifacts; None when a tracking server decides."""
    configured = settings.mlflow.artifact_location.strip()
    if configured:
        return configured if "://" in configured else str(Path(configured).resolve())
    if tracking_uri(settings).startswith(("http://", "https://")):
        return None
    return str(store_dir(settings) / "artifacts")


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def quiet() -> None:
    """Silence MLflow's chatter for this process (warnings stay visible as our own one-line errors)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's default retries an unreachable server for minutes; a few seconds, then one line.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("sagemaker_mlflow").disabled = True


def prepare(settings) -> str:
    """Create the default store's folder when the store is a local SQLite file; return the URI."""
    uri = tracking_uri(settings)
    if is_local_sqlite(uri):
        path = Path(uri.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"cannot create the MLflow store folder {path.parent} ({exc.strerror}): check mlflow.tracking_uri and permissions"
            ) from None
    return uri


def client(settings):
    """An MlflowClient on the project's tracking and registry store."""
    quiet()
    from mlflow.tracking import MlflowClient

    uri = prepare(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
