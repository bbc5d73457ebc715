"""Every failure the issue names, caused for real: stopped, slow and broken model servers, stores that are down.

None of them may answer 500 or show a traceback.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.api.conftest import (
    CUSTOMERS,
    deploy,
    free_port,
    serve_app,
    start_model_server,
    teardown_deployment,
)
from tests.online.conftest import closed_port


def assert_clean_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail", "request_id"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def bare_model_app(delay: float = 0.0, status: int = 200, body: str = "0.5\n") -> Starlette:
    """A stand-in model server (a real one, over HTTP): answers after `delay` with `status` and `body`."""

    async def invocations(request):
        await asyncio.sleep(delay)
        return PlainTextResponse(body, status_code=status, headers={"X-Model-Version": "slow"})

    async def ping(request):
        return Response(b"", status_code=200)

    return Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/endpoints/{name}/invocations", invocations, methods=["POST"]),
            Route("/ping", ping, methods=["GET"]),
        ]
    )


def test_model_server_stopped_is_503_with_retry_after_and_recovers(request, tmp_path, model_dir):
    port = free_port()
    server = start_model_server(tmp_path / "ms", model_dir, port)
    deployed = deploy(tmp_path / "api", request, "sqlite", "sqlite", server.url)
    try:
        assert deployed.get(f"/predict/{CUSTOMERS[0]}").status_code == 200  # a pooled connection is now open
        server.stop()
        response = deployed.get(f"/predict/{CUSTOMERS[0]}")
        body = assert_clean_error(response, 503)
        assert response.headers["Retry-After"] == "7"
        assert "model endpoint is unreachable" in body["detail"]
        assert deployed.post("/predict", {"ids": CUSTOMERS[:3]}).status_code == 503
        ready = deployed.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["model_endpoint"]["ok"] is False
        # The same port comes back: the API recovers without a restart (dead pooled connections are replaced).
        server = start_model_server(tmp_path / "ms2", model_dir, port)
        assert deployed.get(f"/predict/{CUSTOMERS[0]}").status_code == 200
    finally:
        server.stop()
        teardown_deployment(deployed)


def test_nothing_listening_at_the_model_url_is_503(request, tmp_path):
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", f"http://127.0.0.1:{closed_port()}")
    try:
        response = deployed.get(f"/predict/{CUSTOMERS[0]}")
        assert_clean_error(response, 503)
        assert response.headers["Retry-After"] == "7"
    finally:
        teardown_deployment(deployed)


def test_a_model_server_slower_than_the_timeout_is_504_on_time(request, tmp_path):
    slow = serve_app(bare_model_app(delay=5.0))
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", slow.url, timeout_seconds=0.5)
    try:
        started = time.perf_counter()
        response = deployed.get(f"/predict/{CUSTOMERS[0]}")
        elapsed = time.perf_counter() - started
        body = assert_clean_error(response, 504)
        assert "did not answer within 0.5 s" in body["detail"]
        assert 0.45 <= elapsed < 2.0
        assert_clean_error(deployed.post("/predict", {"ids": CUSTOMERS[:2]}), 504)
    finally:
        teardown_deployment(deployed)
        slow.stop()


@pytest.mark.parametrize(
    "status, body",
    [
        (500, "internal failure\n"),
        (400, "row 1 has 3 fields\n"),
        (200, "not-a-number\n"),
        (200, "0.1\n0.2\n"),
        (200, "1.7\n"),
    ],
    ids=["500", "400", "garbage", "wrong-count", "out-of-range"],
)
def test_a_model_server_answering_an_error_or_garbage_is_502(request, tmp_path, status, body):
    broken = serve_app(bare_model_app(status=status, body=body))
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", broken.url)
    try:
        answer = deployed.get(f"/predict/{CUSTOMERS[0]}")
        detail = assert_clean_error(answer, 502)["detail"]
        assert "model endpoint failed" in detail and body.strip() not in detail  # nothing internal echoed
    finally:
        teardown_deployment(deployed)
        broken.stop()


def test_a_redis_store_that_is_down_is_503(request, tmp_path, model_server):
    """The real Redis client pointed at a port where nothing listens, swapped in with dependency_overrides."""
    import dataclasses

    from api.deps import get_services
    from features.online import open_store
    from features.online.redis_store import RedisStoreConfig

    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url)
    down = open_store(config=RedisStoreConfig(url=f"redis://127.0.0.1:{closed_port()}/15", timeout_seconds=0.3))
    services = deployed.api.app.state.services
    deployed.api.app.dependency_overrides[get_services] = lambda: dataclasses.replace(services, store=down)
    try:
        for response in (deployed.get(f"/predict/{CUSTOMERS[0]}"), deployed.post("/predict", {"ids": CUSTOMERS[:2]})):
            body = assert_clean_error(response, 503)
            assert body["detail"] == "the feature store is unavailable: retry later"
            assert response.headers["Retry-After"] == "7"
        ready = deployed.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["feature_store"]["ok"] is False
        assert "127.0.0.1" not in ready.text  # no internal address to an unauthenticated caller
    finally:
        deployed.api.app.dependency_overrides.clear()
        teardown_deployment(deployed)


def test_a_sqlite_store_that_cannot_be_opened_is_503(request, tmp_path, model_server):
    from api.main import create_app
    from tests.api.conftest import Deployment, api_settings, log_section

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be")
    settings = api_settings(
        tmp_path,
        {"kind": "sqlite", "sqlite_path": str(blocker / "features.sqlite")},
        log_section("sqlite", tmp_path, request),
        model_server.url,
    )
    server = serve_app(create_app(settings))
    deployed = Deployment(server, settings, tmp_path, "sqlite", "sqlite")
    try:
        assert_clean_error(deployed.get(f"/predict/{CUSTOMERS[0]}"), 503)
        assert deployed.get("/ready").status_code == 503
        assert deployed.get("/health").status_code == 200  # alive, just not ready
    finally:
        server.stop()


def test_an_empty_store_is_503_saying_to_materialize(request, tmp_path, model_server):
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url, generation=None)
    try:
        for response in (deployed.get(f"/predict/{CUSTOMERS[0]}"), deployed.post("/predict", {"ids": [1]})):
            body = assert_clean_error(response, 503)
            assert "python -m features materialize" in body["detail"]
        ready = deployed.get("/ready").json()
        assert ready["ready"] is False and "no feature snapshot" in ready["checks"]["feature_store"]["detail"]
    finally:
        teardown_deployment(deployed)


def test_unknown_routes_and_methods_answer_json_not_500(deployment):
    assert_clean_error(deployment.get("/nope"), 404)
    response = deployment.client.delete("/predict/1")
    assert_clean_error(response, 405)
    assert "GET" in response.headers["Allow"]
