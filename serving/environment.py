"""SageMaker's hosting variables, each named once and read once into a read-only object.

These belong to the container contract (SageMaker sets them), which is why they are read
here and not through configuration.settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError

BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
CONTAINER_MODEL_DIR = Path("/opt/ml/model")
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's limit; the managed containers' MAX_CONTENT_LENGTH


@dataclass(frozen=True)
class SageMakerEnvironment:
    port: int | None
    workers: int | None
    timeout_seconds: int | None

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> "SageMakerEnvironment":
        environ = os.environ if environ is None else environ
        return cls(
            port=_positive(environ, BIND_TO_PORT, upper=65535),
            workers=_positive(environ, MODEL_SERVER_WORKERS, upper=256),
            timeout_seconds=_positive(environ, MODEL_SERVER_TIMEOUT, upper=3600),
        )


def _positive(environ: Mapping[str, str], name: str, upper: int) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= upper:
        raise UserError(f"{name}={raw!r} is not a whole number from 1 to {upper}: fix or unset it")
    return value
