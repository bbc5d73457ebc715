"""The raw GET /predict/{id} (api.routes.predict_raw) answers exactly as the FastAPI route it stands in front of.

Two kinds of checks:
- which requests the raw handler answers and which it hands on: the handler driven as ASGI
  in front of a real app (its lifespan run here, the real model server, SQLite store and log),
  with a recording app as what it hands on to;
- the same answers: over a real uvicorn socket, each request asked twice of one running API,
  once as is (the raw handler answers) and once with a dependency override in place (which the
  raw handler hands on, so FastAPI's route answers), with the same X-Request-ID: status,
  headers (but Date) and body bytes must be equal, for successes and for every error.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from api.deps import get_services
from api.routes.predict_raw import RawPredictOne, plain_id
from tests.api.conftest import API_KEY, CUSTOMERS, deploy, read_metric, serve_app, teardown_deployment
from tests.api.test_errors import bare_model_app
from tests.online.conftest import closed_port

KEY = {"Authorization": f"Bearer {API_KEY}"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5008804", 5008804),
        ("0", 0),
        (str(2**53 - 1), 2**53 - 1),
        (str(2**53), None),  # over ID_MAX: FastAPI's 422
        ("+5008804", None),
        (" 5008804", None),
        ("5008804.0", None),
        ("5_008_804", None),
        ("05008804", None),  # a leading zero: FastAPI decides
        ("５００８８０４", None),  # full-width digits
        ("", None),
        ("1" * 40, None),
    ],
)
def test_plain_id_takes_only_what_the_route_takes_as_that_id(text, expected):
    assert plain_id(text) == expected


def test_the_raw_handler_answers_the_plain_request_and_hands_everything_else_on(request, tmp_path, model_server):
    from api.main import create_app
    from tests.api.conftest import api_settings, log_section, materialize_generation, store_section

    settings = api_settings(
        tmp_path, store_section("sqlite", tmp_path, request), log_section("sqlite", tmp_path, request), model_server.url
    )
    materialize_generation(settings, 0)
    app = create_app(settings)
    handed_on: list[str] = []

    async def next_app(scope, receive, send):  # what the raw handler hands on to: records, answers 299
        handed_on.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}{scope['root_path']}")
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    raw = RawPredictOne(next_app, api=app)

    async def ask(
        method: str, path: str, query: bytes = b"", root_path: str = "", extra: tuple = ()
    ) -> tuple[int, bytes]:
        messages = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            messages.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query,
            "root_path": root_path,
            "headers": [(b"authorization", f"Bearer {API_KEY}".encode()), *extra],
            "client": ("127.0.0.1", 5000),
        }
        await raw(scope, receive, send)
        return messages[0]["status"], b"".join(m.get("body", b"") for m in messages[1:])

    async def main():
        started: asyncio.Queue = asyncio.Queue()
        sent: asyncio.Queue = asyncio.Queue()
        await started.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, started.get, sent.put)
        )
        assert (await sent.get())["type"] == "lifespan.startup.complete"
        try:
            answered = [await ask("GET", f"/predict/{CUSTOMERS[0]}"), await ask("GET", "/predict/1")]
            handed = [
                await ask("GET", f"/predict/{CUSTOMERS[0]}", b"explain=true"),
                await ask("GET", f"/predict/{CUSTOMERS[0]}", b"explian=true"),
                await ask("GET", "/predict/+5008804"),
                await ask("GET", "/predict/05008804"),
                await ask("GET", "/predict/5008804.0"),
                await ask("GET", f"/predict/{CUSTOMERS[0]}/"),
                await ask("HEAD", f"/predict/{CUSTOMERS[0]}"),
                await ask("POST", f"/predict/{CUSTOMERS[0]}"),
                await ask("GET", f"/api/predict/{CUSTOMERS[0]}", root_path="/api"),
                await ask("GET", "/predict"),
                # A declared body goes through the stack's body limit (its 413 for an oversize one).
                await ask("GET", f"/predict/{CUSTOMERS[0]}", extra=((b"content-length", b"10"),)),
                await ask("GET", f"/predict/{CUSTOMERS[0]}", extra=((b"transfer-encoding", b"chunked"),)),
                await ask("GET", "/health"),
            ]
            app.dependency_overrides[get_services] = lambda: app.state.services
            handed.append(await ask("GET", f"/predict/{CUSTOMERS[0]}"))
            app.dependency_overrides.clear()
        finally:
            await started.put({"type": "lifespan.shutdown"})
            await lifespan
        return answered, handed

    try:
        answered, handed = asyncio.run(main())
    finally:
        from api.prediction_log import open_prediction_log

        open_prediction_log(settings).teardown()
    assert answered[0][0] == 200 and b'"id":%d' % CUSTOMERS[0] in answered[0][1]
    assert answered[1][0] == 404
    assert [status for status, _ in handed] == [299] * len(handed)
    assert handed_on[0] == f"GET /predict/{CUSTOMERS[0]}?explain=true" and len(handed_on) == len(handed)


# The same answers, over HTTP -----------------------------------------------------------------------
def both(deployed, path: str, headers: dict[str, str]):
    """(the raw handler's answer, FastAPI's route's answer) to the same request, with the same request id."""
    app = deployed.api.app
    same = {**headers, "X-Request-ID": "same-request-1"}
    raw = deployed.client.get(path, headers=same)
    app.dependency_overrides[get_services] = lambda: app.state.services  # the raw handler hands overridden apps on
    try:
        route = deployed.client.get(path, headers=same)
    finally:
        app.dependency_overrides.clear()
    return raw, route


def assert_same(raw, route) -> None:
    assert (raw.status_code, raw.content) == (route.status_code, route.content)

    def headers(response):
        return [(k, v) for k, v in response.headers.multi_items() if k != "date"]

    assert headers(raw) == headers(route)
    assert raw.headers["x-request-id"] == "same-request-1"


@pytest.fixture
def sqlite_deployment(request, tmp_path, model_server):
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url, auth_max_failures=100)
    yield deployed
    teardown_deployment(deployed)


@pytest.mark.parametrize(
    "path, headers, status",
    [
        (f"/predict/{CUSTOMERS[0]}", KEY, 200),
        (f"/predict/{CUSTOMERS[-1]}", {"Authorization": f"bearer {API_KEY}"}, 200),  # the scheme in any case
        (f"/predict/{CUSTOMERS[1]}", {"Authorization": f"Bearer   {API_KEY}"}, 200),  # spaces before the key
        ("/predict/1", KEY, 404),
        (str(f"/predict/{2**53 - 1}"), KEY, 404),
        (f"/predict/{CUSTOMERS[0]}", {}, 401),
        (f"/predict/{CUSTOMERS[0]}", {"Authorization": "Bearer"}, 401),
        (f"/predict/{CUSTOMERS[0]}", {"Authorization": f"Basic {API_KEY}"}, 401),
        (f"/predict/{CUSTOMERS[0]}", {"Authorization": "Bearer smk_wrong"}, 401),
    ],
)
def test_the_raw_answer_is_the_routes_answer(sqlite_deployment, path, headers, status):
    raw, route = both(sqlite_deployment, path, headers)
    assert raw.status_code == status, raw.text
    assert_same(raw, route)


def test_a_raw_answer_is_logged_and_counted_as_the_route(sqlite_deployment):
    from api.prediction_log import open_prediction_log

    response = sqlite_deployment.get(f"/predict/{CUSTOMERS[2]}", headers={"X-Request-ID": "raw-logged-1"})
    assert response.status_code == 200
    metrics = sqlite_deployment.client.get("/metrics").text
    assert read_metric(metrics, "api_requests_total", route="/predict/{id}", method="GET", status="200") == 1
    assert read_metric(metrics, "api_predictions_total") == 1
    log = open_prediction_log(sqlite_deployment.settings)
    for _ in range(100):  # the writer flushes every 50 ms in the tests' settings
        entries = [e for e in log.recent(10) if e.request_id == "raw-logged-1"]
        if entries:
            break
        import time

        time.sleep(0.05)
    assert [e.customer_id for e in entries] == [CUSTOMERS[2]]
    assert entries[0].probability == response.json()["probability"]


def test_the_rate_limiters_429_is_the_routes(request, tmp_path, model_server):
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url, auth_max_failures=2)
    try:
        for _ in range(2):
            deployed.get(f"/predict/{CUSTOMERS[0]}", key="smk_wrong")
        raw, route = both(deployed, f"/predict/{CUSTOMERS[0]}", KEY)
        assert raw.status_code == route.status_code == 429
        assert abs(int(raw.headers["Retry-After"]) - int(route.headers["Retry-After"])) <= 1  # the clock moved on
        assert raw.json()["detail"].startswith("too many failed authentications")
        assert route.json()["detail"].startswith("too many failed authentications")
        metrics = deployed.client.get("/metrics").text
        assert read_metric(metrics, "api_auth_throttled_total") == 2
        assert read_metric(metrics, "api_auth_failures_total") == 2
    finally:
        teardown_deployment(deployed)


@pytest.mark.parametrize("failure", ["model-down", "model-500", "model-slow", "store-empty", "store-down"])
def test_backend_failures_answer_as_the_route(request, tmp_path, model_server, failure):
    from features.online import open_store
    from features.online.redis_store import RedisStoreConfig

    stand_in = None
    url = model_server.url
    if failure == "model-down":
        url = f"http://127.0.0.1:{closed_port()}"
    elif failure in ("model-500", "model-slow"):
        stand_in = serve_app(bare_model_app(delay=2.0 if failure == "model-slow" else 0.0, status=500))
        url = stand_in.url
    deployed = deploy(
        tmp_path,
        request,
        "sqlite",
        "sqlite",
        url,
        generation=None if failure == "store-empty" else 0,
        timeout_seconds=0.5,
    )
    if failure == "store-down":  # the real Redis client pointed where nothing listens, for both paths
        down = open_store(config=RedisStoreConfig(url=f"redis://127.0.0.1:{closed_port()}/15", timeout_seconds=0.3))
        deployed.api.app.state.services = dataclasses.replace(deployed.api.app.state.services, store=down)
    try:
        raw, route = both(deployed, f"/predict/{CUSTOMERS[0]}", KEY)
        expected = {"model-down": 503, "model-500": 502, "model-slow": 504, "store-empty": 503, "store-down": 503}
        assert raw.status_code == expected[failure], raw.text
        assert_same(raw, route)
        cause = {
            "model-down": "model_unavailable",
            "model-500": "model_failed",
            "model-slow": "model_timeout",
            "store-down": "store_unavailable",
        }.get(failure)
        if cause:
            metrics = deployed.client.get("/metrics").text
            assert read_metric(metrics, "api_prediction_errors_total", cause=cause) == 2  # one per path
    finally:
        teardown_deployment(deployed)
        if stand_in is not None:
            stand_in.stop()


class _BrokenStore:
    """A store with a bug (not a StoreError): what the app's 500 handler is for."""

    def __init__(self, real) -> None:
        self.real = real

    async def online_read_async(self, ids):
        raise ZeroDivisionError("a bug in the store")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_bug_answers_as_the_route_a_500_with_its_traceback_logged(sqlite_deployment, caplog):
    app = sqlite_deployment.api.app
    app.state.services = dataclasses.replace(app.state.services, store=_BrokenStore(app.state.services.store))
    with caplog.at_level("ERROR", logger="api"):
        raw, route = both(sqlite_deployment, f"/predict/{CUSTOMERS[0]}", KEY)
    assert raw.status_code == 500
    assert raw.json()["detail"].startswith("internal error: the operators have the details in the log")
    assert route.json()["request_id"] == route.headers["x-request-id"] == "same-request-1"  # the id it promises
    assert_same(raw, route)
    bugs = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert len(bugs) == 2 and all(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in bugs)
    metrics = sqlite_deployment.client.get("/metrics").text
    assert read_metric(metrics, "api_requests_total", route="/predict/{id}", method="GET", status="500") == 2
