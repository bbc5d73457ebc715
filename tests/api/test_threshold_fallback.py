"""An endpoint that reports no threshold (as AWS's managed XGBoost container): the registry's production model gives it."""

from __future__ import annotations

import json

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
