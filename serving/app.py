"""The HTTP server: SageMaker's container routes, the SageMaker Runtime route and the admin swap.

Routes:
    GET  /ping                              200 (empty) once a model answers, 503 before
    POST /invocations                       text/csv or application/json rows -> one probability per row
    POST /endpoints/{name}/invocations      the same behind SageMaker Runtime's error shapes (boto3 invoke_endpoint)
                                            either with X-Amzn-SageMaker-Enable-Explanations: Clarify's JSON shape with
                                            exact TreeSHAP attributions (serving.explain)
    GET  /execution-parameters              what batch transform asks a container
    GET  /admin/model, POST /admin/model    the served model / swap to another one (Authorization: Bearer <token>)

Every prediction carries `X-Model-Version` (and SageMaker's custom-attributes header with
the version and the decision threshold); the runtime route also carries
`x-Amzn-Invoked-Production-Variant`. The app is built by `create_app(settings)`; nothing is
loaded at import time: the model is loaded in the lifespan, then followed by the watcher.
"""

from __future__ import annotations

import functools
import gc
import hmac
import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from configuration.settings import Settings, load_settings
from serving import explain
from serving.content_types import JSON, negotiate
from serving.decoder import Rows, decode, request_media_type
from serving.encoder import encode
from serving.environment import PAYLOAD_LIMIT_BYTES
from serving.errors import BadRequest, InferenceError, ModelNotReady, PayloadTooLarge
from serving.model import LoadedModel, ModelRefused, ModelSource
from serving import runtime_api
from serving.swap import ModelHolder, ModelResolver, Watcher, write_desired

log = logging.getLogger("serving")

# Bodies larger than this are decoded off the event loop, so that one big request does not
# hold up the small ones queued behind it.
_INLINE_BODY_BYTES = 64 * 1024


def default_control_dir(settings: Settings) -> Path:
    if settings.serving.control_dir:
        return Path(settings.serving.control_dir)
    return Path(settings.paths.state_dir) / "serving" / f"port-{settings.serving.port}"


@dataclass
class ServerState:
    settings: Settings
    holder: ModelHolder
    resolver: ModelResolver
    watcher: Watcher
    control_dir: Path
    endpoint_name: str
    admin_token: str


def registry_exists(settings: Settings) -> bool:
    """Whether there is a registry to swap from beside a fixed --model-dir (no empty store created for nothing)."""
    from training.mlflow_store import is_local_sqlite, tracking_uri

    if settings.training.registry_backend == "index":
        return (settings.registry_dir() / "index.json").is_file()
    uri = tracking_uri(settings)
    return not is_local_sqlite(uri) or Path(uri.removeprefix("sqlite:///")).is_file()


def build_state(settings: Settings) -> ServerState:
    from training.registry import PRODUCTION, ModelRegistry, open_registry

    serving = settings.serving
    control_dir = default_control_dir(settings)
    control_dir.mkdir(parents=True, exist_ok=True)
    if serving.model_dir:
        base: ModelSource | None = ModelSource("dir", path=str(serving.model_dir))
        alias_path = None
        # A registry, when there is one, lets the admin call swap to a registered version too.
        registry: ModelRegistry | None = open_registry(settings) if registry_exists(settings) else None
    else:
        base = None
        registry = open_registry(settings)
        alias_path = registry.alias_path(PRODUCTION) if hasattr(registry, "alias_path") else None
    holder = ModelHolder()
    resolver = ModelResolver(registry=registry, directory_version=serving.model_version)
    watcher = Watcher(holder, resolver, control_dir, base, alias_path, serving.watch_interval_seconds)
    return ServerState(
        settings=settings,
        holder=holder,
        resolver=resolver,
        watcher=watcher,
        control_dir=control_dir,
        endpoint_name=serving.endpoint_name,
        admin_token=serving.admin_token.get_secret_value(),
    )


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


# A client that sends its whole body before reading (urllib, requests) sees a connection reset
# instead of the 413 when the server closes with the body unread: read and discard the rest of
# an oversize body up to this bound first (beyond it, the reset is the answer).
_DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


async def _drain(receive, size: int) -> None:
    while size <= _DRAIN_LIMIT_BYTES:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        size += len(message.get("body", b""))


async def _receive_body(receive, declared: bytes | None, limit: int) -> bytes:
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("the Content-Length header is not a number") from None
        if size > limit:
            if size <= _DRAIN_LIMIT_BYTES:
                await _drain(receive, 0)
            raise PayloadTooLarge(
                f"the body is {size} bytes, over the {limit} bytes (6 MB) SageMaker accepts: send fewer rows per request"
            )
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body = message.get("body", b"")
        if len(body) <= limit:
            return body  # the usual small request: its whole body in one message, no list to join
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _drain(receive, size)
            raise PayloadTooLarge(
                f"the body is over the {limit} bytes (6 MB) SageMaker accepts: send fewer rows per request"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


@functools.lru_cache(maxsize=256)
def _request_type(content_type: bytes | None) -> str:
    # Clients send the same few header values again and again: parse each once (415 is never cached).
    return request_media_type(content_type.decode("latin-1") if content_type is not None else None)


@functools.lru_cache(maxsize=256)
def _answer_type(accept: bytes | None) -> str:
    return negotiate(accept.decode("latin-1") if accept is not None else None)  # 406 is never cached


async def _read_rows(model: LoadedModel, headers: dict[bytes, bytes], receive) -> tuple[Rows, str]:
    """Negotiate, read, decode: the rows and the answer's media type; every client problem is an InferenceError."""
    media_type = _request_type(headers.get(b"content-type"))  # 415
    answer_type = _answer_type(headers.get(b"accept"))  # 406, before any model work
    body = await _receive_body(receive, headers.get(b"content-length"), PAYLOAD_LIMIT_BYTES)  # 413
    if len(body) <= _INLINE_BODY_BYTES:
        return decode(body, media_type, model.feature_names), answer_type  # 400
    return await run_in_threadpool(decode, body, media_type, model.feature_names), answer_type


async def _predict(model: LoadedModel, headers: dict[bytes, bytes], receive) -> tuple[bytes, str]:
    """Negotiate, read, decode, predict, encode: every client problem is an InferenceError."""
    rows, answer_type = await _read_rows(model, headers, receive)
    try:
        if len(rows) <= model.fast_max_rows:
            probabilities = model.predict(rows)
        else:
            probabilities = await run_in_threadpool(model.predict, rows)
    except Exception as exc:  # a model that passed its probe should not fail; say so without internals
        log.exception("prediction failed with version %s", model.version)
        raise InferenceError(f"the model failed to predict ({type(exc).__name__}); see the server log") from None
    return encode(probabilities, answer_type), answer_type


async def _predict_explained(
    model: LoadedModel, headers: dict[bytes, bytes], receive, wanted: bool
) -> tuple[bytes, str]:
    """The same prediction, answered in Clarify's shape with XGBoost's exact TreeSHAP values (serving.explain)."""
    rows, answer_type = await _read_rows(model, headers, receive)
    try:
        probabilities = await run_in_threadpool(model.predict, rows)
        contribs = await run_in_threadpool(explain.contributions, model.booster, rows) if wanted else None
    except Exception as exc:
        log.exception("explained prediction failed with version %s", model.version)
        raise InferenceError(f"the model failed to explain ({type(exc).__name__}); see the server log") from None
    return explain.clarify_body(encode(probabilities, answer_type), answer_type, model.feature_names, contribs), JSON


@functools.lru_cache(maxsize=16)
def _content_type(media_type: str) -> tuple[bytes, bytes]:
    return (b"content-type", media_type.encode("latin-1"))


@functools.lru_cache(maxsize=16)
def _content_type_headers(media_type: str) -> list[tuple[bytes, bytes]]:
    return [_content_type(media_type)]  # one list per media type: serving.fast_http caches its bytes by identity


def answer_plain(
    model: LoadedModel | None, content_type: bytes | None, accept: bytes | None, body: bytes, runtime: bool
) -> tuple[bytes, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]] | None:
    """The 200 of a small prediction without ASGI: (content, content-type header, the model's headers), or None.

    None whenever the answer would be anything else (no model, a 415, 406 or 400, more rows than
    the fast path takes, a failing model): the caller then hands the request to the ASGI route,
    which answers it with its errors, so that they live in one place. The steps are the ASGI
    route's own functions, in its order.
    """
    if model is None:
        return None
    try:
        media_type = _request_type(content_type)
        answer_type = _answer_type(accept)
        rows = decode(body, media_type, model.feature_names)
        if len(rows) > model.fast_max_rows:
            return None
        content = encode(model.predict(rows), answer_type)
    except Exception:  # every error is answered (and logged) by the ASGI route
        return None
    return content, _content_type_headers(answer_type), model.raw_runtime_headers if runtime else model.raw_headers


async def _send(send, status: int, body: bytes, media_type: str, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [_content_type(media_type), (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _plain_error(error: InferenceError) -> Response:
    return Response(error.message + "\n", status_code=error.status_code, media_type="text/plain")


def create_app(settings: Settings, state: ServerState | None = None) -> "PredictionRoutes":
    state = state or build_state(settings)
    holder = state.holder

    async def ping(request: Request) -> Response:
        if holder.current is None:
            return Response("no model loaded yet\n", status_code=503, media_type="text/plain")
        return Response(b"", status_code=200)

    async def execution_parameters(request: Request) -> Response:
        return JSONResponse(
            {
                "MaxConcurrentTransforms": state.settings.serving.workers,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": PAYLOAD_LIMIT_BYTES // (1024 * 1024),
            }
        )

    def _admin_denied(request: Request) -> Response | None:
        if not state.admin_token:
            return JSONResponse(
                {"error": "the admin routes are disabled: set serving.admin_token (SPARKMAKER_SERVING__ADMIN_TOKEN)"},
                status_code=403,
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.admin_token.encode()):
            return JSONResponse(
                {"error": "missing or wrong admin token: send Authorization: Bearer <serving.admin_token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    async def admin_model(request: Request) -> Response:
        denied = _admin_denied(request)
        if denied is not None:
            return denied
        if request.method == "GET":
            model = holder.current
            return JSONResponse(
                {
                    "pid": os.getpid(),
                    "model": model.describe() if model else None,
                    "last_refusal": state.watcher.last_error,
                }
            )
        try:
            source = _admin_source(await request.body())
        except BadRequest as error:
            return JSONResponse({"error": error.message}, status_code=400)
        try:
            loaded, previous = await run_in_threadpool(holder.swap, lambda: state.resolver.load(source))
        except ModelRefused as exc:
            current = holder.current
            return JSONResponse(
                {
                    "error": f"refused {source.describe()}: {exc}",
                    "serving": current.version if current else None,
                },
                status_code=409,
            )
        # The other workers follow this file within one poll (serving.swap).
        write_desired(state.control_dir, source)
        log.info("admin swap: serving version %s (%s)", loaded.version, source.describe())
        return JSONResponse(
            {
                "version": loaded.version,
                "previous": previous.version if previous else None,
                "model_sha256": loaded.sha256,
                "pid": os.getpid(),
                "other_workers": f"follow within {state.settings.serving.watch_interval_seconds:g} s",
            }
        )

    @asynccontextmanager
    async def lifespan(app: Starlette):
        # The first load happens before this worker takes connections (as the SageMaker
        # containers' post_worker_init does), so that with several workers no connection
        # lands on one without a model. Connections wait in the listen backlog meanwhile.
        # Only a server waiting for a first promotion answers /ping with 503.
        await run_in_threadpool(state.watcher.check)
        # Everything loaded so far (modules, the model) lives as long as the process: keep
        # it out of the garbage collector's passes, which otherwise walk it again and again.
        gc.collect()
        gc.freeze()
        state.watcher.start()
        try:
            yield
        finally:
            state.watcher.stop()

    app = Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/execution-parameters", execution_parameters, methods=["GET"]),
            Route("/admin/model", admin_model, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.server = state
    return PredictionRoutes(app, state)


class PredictionRoutes:
    """The two prediction routes as plain ASGI in front of the Starlette app (which has the rest).

    They are the hot path: answering them without Starlette's request, routing and response
    objects roughly halves the server's own time per single-row request. The logic is
    the same functions either way (content types, decoder, encoder, runtime_api).
    """

    explain_header = explain.HEADER

    def __init__(self, app: Starlette, state: ServerState) -> None:
        self.app = app
        self.state = state

    def answer_plain(self, content_type: bytes | None, accept: bytes | None, body: bytes, endpoint: str | None):
        """`answer_plain` for this server's model at /invocations (endpoint None) or its runtime route.

        The caller has checked that the request asks for no explanation (`explain_header`).
        """
        if endpoint is not None and endpoint != self.state.endpoint_name:
            return None
        return answer_plain(self.state.holder.current, content_type, accept, body, runtime=endpoint is not None)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/invocations":
                return await self._invocations(scope, receive, send, runtime=None)
            if path.startswith("/endpoints/") and path.endswith("/invocations"):
                name = path[len("/endpoints/") : -len("/invocations")]
                if name and "/" not in name:
                    return await self._invocations(scope, receive, send, runtime=name)
        await self.app(scope, receive, send)

    async def _invocations(self, scope, receive, send, runtime: str | None) -> None:
        if scope["method"] != "POST":
            return await Response("use POST\n", status_code=405, media_type="text/plain", headers={"Allow": "POST"})(
                scope, receive, send
            )
        if runtime is not None and runtime != self.state.endpoint_name:
            return await runtime_api.endpoint_not_found(runtime)(scope, receive, send)
        model = self.state.holder.current  # read once: this model answers, and its version is reported
        if model is None:
            if runtime is not None:
                answer = runtime_api.model_not_ready(
                    f"Endpoint {runtime} has no model loaded yet: retry in a few seconds."
                )
            else:
                answer = _plain_error(ModelNotReady("no model loaded yet: retry when GET /ping answers 200"))
            return await answer(scope, receive, send)
        headers = dict(scope["headers"])
        switch = headers.get(explain.HEADER)
        try:
            if switch is None:
                content, media_type = await _predict(model, headers, receive)
            else:
                content, media_type = await _predict_explained(model, headers, receive, explain.wanted(switch))
        except ClientGone:
            return None
        except PayloadTooLarge as error:
            answer = runtime_api.oversize_body(PAYLOAD_LIMIT_BYTES) if runtime is not None else _plain_error(error)
            return await answer(scope, receive, send)
        except InferenceError as error:
            answer = runtime_api.model_error(error) if runtime is not None else _plain_error(error)
            return await answer(scope, receive, send)
        await _send(
            send, 200, content, media_type, model.raw_runtime_headers if runtime is not None else model.raw_headers
        )


def _admin_source(body: bytes) -> ModelSource:
    try:
        document = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise BadRequest('the body is not JSON: send {"version": "3"} or {"model_dir": "/path/to/model"}') from None
    if not isinstance(document, dict) or len(document) != 1 or not ({"version", "model_dir"} & set(document)):
        raise BadRequest('send exactly one of {"version": "3"} (a registry version) or {"model_dir": "/path/to/model"}')
    if "version" in document:
        version = str(document["version"]).strip()
        if not version:
            raise BadRequest("version is empty")
        return ModelSource("registry", version=version)
    path = str(document["model_dir"])
    if not os.path.isabs(path):
        raise BadRequest(f"model_dir {path!r} is not an absolute path on the server")
    return ModelSource("dir", path=path)


def app_from_settings() -> "PredictionRoutes":
    """uvicorn's factory (`serving.app:app_from_settings`): each worker process reads the settings itself."""
    from serving.logs import configure_logging

    configure_logging()
    return create_app(load_settings())
