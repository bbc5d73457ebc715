"""Errors the API answers, and the handlers that turn every failure into a short JSON body.

Every error body is `{"detail": "...", "request_id": "..."}`: what went wrong and what to
do, never a traceback or an internal address (those go to the log, under the same
request id). Validation errors (422) keep FastAPI's list of problems in `detail`, bounded:
at most MAX_PROBLEMS of them, each input quoted as a short excerpt (validation_details).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.model_endpoint import ModelFailed, ModelTimeout, ModelUnavailable
from api.observability import current_request_id
from configuration.errors import excerpt
from features.online.base import StoreError, StoreUnavailable

log = logging.getLogger("api")


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


def error_response(status_code: int, detail, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "request_id": current_request_id()}, status_code=status_code, headers=headers
    )


MAX_PROBLEMS = 10  # problems listed in a 422; the rest are counted
MAX_EXCERPT = 80  # characters of an input quoted in a 422


def input_excerpt(value: Any) -> Any:
    """The input as it was when it is a short, finite JSON value; else a short printable excerpt of it.

    A 422 must not echo a 20 MB body, and cannot hold NaN or Infinity (they are not JSON).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # "nan", "inf", "-inf"
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(jsonable_encoder(value), allow_nan=True, separators=(",", ":"))
        except (TypeError, ValueError):
            text = repr(value)
        return printable_excerpt(text)
    return value if len(text) <= MAX_EXCERPT else printable_excerpt(text)


def printable_excerpt(text: str, limit: int = MAX_EXCERPT) -> str:
    return excerpt(text, limit)


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's list of problems, bounded: the first MAX_PROBLEMS, each with type, loc, msg and a short input."""
    details = []
    for error in errors[:MAX_PROBLEMS]:
        detail = {
            "type": error.get("type"),
            "loc": list(error.get("loc", ())),
            "msg": printable_excerpt(str(error.get("msg", "")), 200),
        }
        if "input" in error:
            detail["input"] = input_excerpt(error["input"])
        if error.get("ctx"):
            detail["ctx"] = {
                str(k): input_excerpt(v if isinstance(v, (int, float, str, bool)) else str(v))
                for k, v in error["ctx"].items()
            }
        details.append(detail)
    if len(errors) > MAX_PROBLEMS:
        details.append({"type": "truncated", "loc": [], "msg": f"and {len(errors) - MAX_PROBLEMS} more problems"})
    return details


def failure_answer(exc: Exception, timeout_seconds: float) -> tuple[int, str] | None:
    """The status and message a client gets for a backend failure (the handlers below and the console say the same)."""
    if isinstance(exc, StoreUnavailable):
        return 503, "the feature store is unavailable: retry later"
    if isinstance(exc, StoreError):
        return 503, "the feature store cannot answer: retry later"
    if isinstance(exc, ModelUnavailable):
        return 503, "the model endpoint is unreachable: retry later"
    if isinstance(exc, ModelTimeout):
        return 504, f"the model endpoint did not answer within {timeout_seconds:g} s: retry later"
    if isinstance(exc, ModelFailed):
        return 502, "the model endpoint failed to score the request; the operators have the details in the log"
    return None


# The backends' failures: (type, the metric's cause, what the log line says, whether a Retry-After goes with it).
# One table for the exception handlers below and the raw GET /predict/{id} (api.routes.predict_raw);
# subclasses before their base (StoreUnavailable is a StoreError).
BACKEND_FAILURES: tuple[tuple[type[Exception], str, str, bool], ...] = (
    (StoreUnavailable, "store_unavailable", "feature store unavailable", True),
    (StoreError, "store_error", "feature store error", True),
    (ModelUnavailable, "model_unavailable", "model endpoint unavailable", True),
    (ModelTimeout, "model_timeout", "model endpoint timed out", False),
    (ModelFailed, "model_failed", "model endpoint failed", False),
)


def backend_failure(exc: Exception, metrics, retry_after_seconds: int, timeout_seconds: float) -> JSONResponse | None:
    """The answer to a backend failure, logged (with its reason, for operators) and counted; None for anything else."""
    for kind, cause, what, retry in BACKEND_FAILURES:
        if isinstance(exc, kind):
            log.error("%s: %s", what, exc, extra={"cause": cause})
            metrics.errors.labels(cause).inc()
            status, message = failure_answer(exc, timeout_seconds) or (500, "internal error")
            return error_response(status, message, {"Retry-After": str(retry_after_seconds)} if retry else None)
    return None


def unexpected_failure() -> JSONResponse:
    """The 500 of a bug, its traceback logged (call it inside the `except`): the route's handler and the raw path's."""
    log.exception("unexpected error", extra={"cause": "bug"})
    return error_response(500, "internal error: the operators have the details in the log under this request id")


def install(app: FastAPI, retry_after_seconds: int, timeout_seconds: float) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, exc.headers)

    async def backend(request: Request, exc: Exception) -> JSONResponse:
        answer = backend_failure(exc, app.state.metrics, retry_after_seconds, timeout_seconds)
        if answer is None:  # only registered for the table's types
            raise exc
        return answer

    for kind, *_ in BACKEND_FAILURES:
        app.add_exception_handler(kind, backend)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_details(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    # RequestMiddleware answers a bug itself (with the request id); this is for one outside it.
    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_failure()
