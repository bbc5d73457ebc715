"""Starting the model server: where the model comes from, port and workers, then uvicorn.

Precedence: command-line option, then SageMaker's variables (SAGEMAKER_BIND_TO_PORT,
SAGEMAKER_MODEL_SERVER_WORKERS), then the settings. The model: --model-dir, else
serving.model_dir, else /opt/ml/model when it exists (the container), else the registry's
production model.

Workers are separate processes started by uvicorn, each importing
`serving.app:app_from_settings` and reading the settings itself; the options decided here
reach them as SPARKMAKER_SERVING__* variables, the settings' own override mechanism.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from configuration.network import check_port
from configuration.settings import Settings, load_settings
from serving.app import default_control_dir
from serving.environment import CONTAINER_MODEL_DIR, SageMakerEnvironment
from serving.model import ModelSource, load_model
from serving.swap import DESIRED_FILE, read_line

log = logging.getLogger("serving")


@dataclass(frozen=True)
class ServerPlan:
    host: str
    port: int
    workers: int
    model_dir: Path | None  # None: the registry's production model
    control_dir: Path
    timeout_seconds: int


def plan(
    settings: Settings, *, model_dir: str | None, host: str | None, port: int | None, workers: int | None
) -> ServerPlan:
    environment = SageMakerEnvironment.read()
    chosen_dir: Path | None
    if model_dir:
        chosen_dir = Path(model_dir).resolve()
    elif settings.serving.model_dir:
        chosen_dir = Path(settings.serving.model_dir)
    elif CONTAINER_MODEL_DIR.is_dir() and any(CONTAINER_MODEL_DIR.iterdir()):
        chosen_dir = CONTAINER_MODEL_DIR
    else:
        chosen_dir = None
    chosen_port = port or environment.port or settings.serving.port
    chosen = settings.model_copy(update={"serving": settings.serving.model_copy(update={"port": chosen_port})})
    return ServerPlan(
        host=host or settings.serving.host,
        port=chosen_port,
        workers=workers or environment.workers or settings.serving.workers,
        model_dir=chosen_dir,
        control_dir=default_control_dir(chosen).resolve(),
        timeout_seconds=environment.timeout_seconds or 60,
    )


def check_model(settings: Settings, server: ServerPlan) -> str:
    """Fail before starting when the model cannot be served; return what will be served."""
    if server.model_dir is not None:
        loaded = load_model(
            server.model_dir, ModelSource("dir", path=str(server.model_dir)), settings.serving.model_version
        )
        return f"version {loaded.version} from {server.model_dir}"
    from training.registry import PRODUCTION, open_registry

    registry = open_registry(settings)
    # The alias's one-line mirror, as the workers' watcher reads it: no store query, so the
    # SageMaker hosting image (no mlflow) starts on the registry's files alone.
    version = read_line(registry.alias_path(PRODUCTION)) if hasattr(registry, "alias_path") else registry.alias()
    if version is None:
        return f"no production model in {settings.registry_dir()} yet: waiting for a promotion (/ping answers 503 until then)"
    loaded = load_model(registry.model_dir(version), ModelSource("registry", version=version), version)
    return f"registry version {loaded.version} (production) from {settings.registry_dir()}"


def run(settings: Settings, server: ServerPlan) -> int:
    """Serve until stopped; the exit status."""
    import uvicorn

    from configuration.workers import serve

    check_port(server.host, server.port)
    described = check_model(settings, server)
    server.control_dir.mkdir(parents=True, exist_ok=True)
    # A pin left by an admin call of an earlier run does not outlive it.
    (server.control_dir / DESIRED_FILE).unlink(missing_ok=True)
    overrides = {
        "SPARKMAKER_SERVING__HOST": server.host,
        "SPARKMAKER_SERVING__PORT": str(server.port),
        "SPARKMAKER_SERVING__WORKERS": str(server.workers),
        "SPARKMAKER_SERVING__CONTROL_DIR": str(server.control_dir),
    }
    if server.model_dir is not None:
        overrides["SPARKMAKER_SERVING__MODEL_DIR"] = str(server.model_dir)
    os.environ.update(overrides)
    load_settings()  # the workers will read exactly this: fail here, in one line, if it is invalid
    log.info("starting on %s:%d with %d worker(s): %s", server.host, server.port, server.workers, described)
    config = uvicorn.Config(
        "serving.app:app_from_settings",
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        # httptools, with the plain small prediction answered without the ASGI cycle (serving.fast_http).
        http="serving.fast_http:InvocationsProtocol",
        loop="uvloop",
        access_log=False,
        log_level="warning",
        # No proxy in front to trust X-Forwarded-* from, and no need to advertise the server.
        proxy_headers=False,
        server_header=False,
        # SageMaker keeps connections open between invocations; it kills a container 30 s after SIGTERM.
        timeout_keep_alive=max(server.timeout_seconds, 5),
        timeout_graceful_shutdown=25,
    )
    return serve(config)
