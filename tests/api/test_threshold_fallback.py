"""An endpoint that reports no threshold (as AWS's managed XGBoost container): the registry's production model gives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.api.conftest import CUSTOMERS, deploy, serve_app, teardown_deployment
from tests.api.test_errors import assert_clean_error


def plain_model_app(score: float) -> Starlette:
    """Answers like the managed XGBoost container: text/csv scores, no version, no custom attributes."""

    async def invocations(request):
        rows = (await request.body()).decode().strip().splitlines()
        return PlainTextResponse("".join(f"{score}\n" for _ in rows))

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])


def test_threshold_and_version_come_from_the_registry_when_the_endpoint_is_silent(request, tmp_path, model_dir):
    from training import artifact
    from training.registry import open_registry

    server = serve_app(plain_model_app(0.42))
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", server.url)
    try:
        assert_clean_error(deployed.get(f"/predict/{CUSTOMERS[0]}"), 502)  # no registry yet: says so, 502

        registry = open_registry(deployed.settings)  # <lake>/registry, the API's default
        version = registry.register(
            artifact.pack(model_dir, tmp_path / "model.tar.gz"), artifact.read_metadata(model_dir)
        )
        registry.promote(version)
        threshold = json.loads((model_dir / "model-metadata.json").read_text())["threshold"]
        body = deployed.get(f"/predict/{CUSTOMERS[0]}").json()
        assert body["probability"] == 0.42
        assert body["threshold"] == threshold and body["label"] == int(0.42 >= threshold)
        assert body["model_version"] == version
    finally:
        teardown_deployment(deployed)
        server.stop()


def test_the_fallback_reads_the_registrys_files_without_mlflow(monkeypatch, tmp_path, model_dir):
    """The API image has no mlflow: the threshold comes from the alias mirror and the model's own metadata file."""
    from configuration.settings import REPO_ROOT, load_settings
    from training import artifact
    from training.registry import open_registry

    monkeypatch.setenv("SPARKMAKER_PATHS__LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("SPARKMAKER_PATHS__STATE_DIR", str(tmp_path / "state"))
    registry = open_registry(load_settings())
    first = registry.register(artifact.pack(model_dir, tmp_path / "model.tar.gz"), artifact.read_metadata(model_dir))
    second = registry.register(artifact.pack(model_dir, tmp_path / "again.tar.gz"), artifact.read_metadata(model_dir))
    registry.promote(second)
    threshold = json.loads((model_dir / "model-metadata.json").read_text())["threshold"]
    # A child in which `import mlflow` fails, as in the API image.
    script = (
        "import sys; sys.modules['mlflow'] = None; "
        "from configuration.settings import load_settings; from api.model_endpoint import RegistryThresholds; "
        "print(RegistryThresholds(load_settings()).lookup())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [repr((second, threshold))], (done.stdout, done.stderr)
    assert first != second
