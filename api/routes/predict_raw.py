"""GET /predict/{id} as plain ASGI in front of FastAPI's router: the API's hot path.

FastAPI's routing, dependency solving and validation cost more per request than everything
else the API does (benchmarks/README.md, Prediction API, 2026-12-01 profile). This handler
answers the plain request itself, as serving/app.py does for /invocations, and hands
everything else to FastAPI unchanged:

- answered here: GET, no query string, no root_path, an id of 1 to 16 ASCII digits without a
  leading zero and at most ID_MAX, no `app.dependency_overrides` (tests swap clients there);
- handed on: `?explain=...` and any other query (so an unknown parameter is FastAPI's 422), an
  id FastAPI would refuse or parse otherwise (`+5`, ` 5`, `5.0`, `05`: its 422 and its rules),
  other methods (405), anything under a root_path.

The decision is taken before any side effect (no key is checked twice). What the route does is
done by the same functions either way: the key check (`KeyChecker.check` with `deps.bearer_key`,
FastAPI's own header parsing), `service.score`, the 404/503 of a missing id or snapshot, the log
entry (`service.log_scoring`), the answer (`service.item`, encoded as Starlette's JSONResponse
encodes), backend failures (`errors.backend_failure`: log, metric, 503/504/502). The FastAPI
route stays declared in api/routes/predict.py, so the OpenAPI document and /docs are unchanged.

It runs in front of FastAPI's whole stack (api.main.PredictionApi calls it first), because
each layer of that stack costs per request (Starlette's error and exception middleware,
FastAPI's telemetry and body-limit wrappers, ours): what those layers give the plain request
it gives itself, with the same functions:
- request id, access line and request metrics: its own `RequestMiddleware` (the stack's class),
  with scope["route"] set to the FastAPI route, so the route label is the template "/predict/{id}";
- the body limit: a request that declares a body (Content-Length or Transfer-Encoding) is
  handed on, so BodyLimitMiddleware's 413 stays the answer to an oversize one;
- a bug: the 500 and the logged traceback of the stack (`errors.unexpected_failure`, which its
  RequestMiddleware sends).
Not given: FastAPI's native OpenTelemetry spans, which this project does not configure.
"""

from __future__ import annotations

import json

from fastapi import FastAPI

from api import service
from api.deps import bearer_key
from api.errors import ApiError, backend_failure, error_response, unexpected_failure
from api.model_endpoint import ModelEndpointError
from api.observability import RequestMiddleware, current_request_id
from api.schemas import ID_MAX
from features.online.base import StoreError

PREFIX = "/predict/"
TEMPLATE = "/predict/{id}"
_MAX_DIGITS = len(str(ID_MAX))
# Starlette's JSONResponse.render, with the encoder made once instead of per call.
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode


def plain_id(text: str) -> int | None:
    """The id when FastAPI's route would take `text` as exactly that id; None to let FastAPI decide."""
    if not (0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()) or (text[0] == "0" and text != "0"):
        return None
    value = int(text)
    return value if value <= ID_MAX else None


def _declares_body(scope) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # the first, as Starlette's Headers.get
    return None


def find_route(routes, path: str = TEMPLATE):
    """The GET route of this template, through included routers (FastAPI 0.165 keeps them as `_IncludedRouter`)."""
    for route in routes:
        if getattr(route, "path", None) == path and "GET" in (getattr(route, "methods", None) or ()):
            return route
        inner = getattr(route, "original_router", None)
        found = find_route(inner.routes, path) if inner is not None else None
        if found is not None:
            return found
    return None


class RawPredictOne:
    """Answers the plain GET /predict/{id}; hands every other request to `app` (FastAPI's own stack)."""

    def __init__(self, app, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._answer = RequestMiddleware(self._predict, metrics=api.state.metrics, on_bug=unexpected_failure)
        self.route = find_route(api.routes)
        if self.route is None:
            raise RuntimeError(f"no GET {TEMPLATE} route to answer in front of: include api.routes.predict first")
        settings = api.state.settings.api
        self.retry_after_seconds = settings.retry_after_seconds
        self.timeout_seconds = settings.timeout_seconds

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(PREFIX)
            and not scope.get("query_string")
            and not scope.get("root_path")
            and not self.api.dependency_overrides
            and plain_id(scope["path"][len(PREFIX) :]) is not None
            and not _declares_body(scope)
        ):
            return await self._answer(scope, receive, send)
        await self.app(scope, receive, send)

    async def _predict(self, scope, receive, send) -> None:
        scope["route"] = self.route  # what RequestMiddleware labels the metrics with
        customer_id = plain_id(scope["path"][len(PREFIX) :]) or 0  # never None: __call__ took only such paths
        state = self.api.state
        client = scope.get("client")
        try:
            state.keys.check(client[0] if client else "unknown", bearer_key(_header(scope, b"authorization")))
            services = state.services
            scoring = await service.score([customer_id], services)
            if not scoring.scored:
                raise await service.no_snapshot_error(services.store) or ApiError(
                    404, service.not_found_message(customer_id)
                )
            service.log_scoring(services.log_writer, scoring)
            body = service.item(scoring.scored[0], scoring)
            body["request_id"] = current_request_id()
        except ApiError as exc:
            return await error_response(exc.status_code, exc.detail, exc.headers)(scope, receive, send)
        except (StoreError, ModelEndpointError) as exc:
            answer = backend_failure(exc, state.metrics, self.retry_after_seconds, self.timeout_seconds)
            if answer is None:
                raise
            return await answer(scope, receive, send)
        content = _encode(body).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(content)).encode("latin-1")),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
