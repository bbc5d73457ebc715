"""Errors the API answers, and the handlers that turn every failure into a short JSON body.

Every error body is `{"detail": "...", "request_id": "..."}`: what went wrong and what to
do, never a traceback or an internal address (those go to the log, under the same
request id). Validation errors (422) keep FastAPI's list of problems in `detail`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.model_endpoint import ModelFailed, ModelTimeout, ModelUnavailable
from api.observability import current_request_id
from features.online.base import StoreError, StoreUnavailable

log = logging.getLogger("api")


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


def error_response(status_code: int, detail, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": current_request_id()}, status_code=status_code, headers=headers)


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


def install(app: FastAPI, retry_after_seconds: int, timeout_seconds: float) -> None:
    retry = {"Retry-After": str(retry_after_seconds)}

    def known(exc: Exception) -> tuple[int, str]:
        return failure_answer(exc, timeout_seconds) or (500, "internal error: the operators have the details in the log")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("feature store unavailable: %s", exc, extra={"cause": "store_unavailable"})
        app.state.metrics.errors.labels("store_unavailable").inc()
        return error_response(*known(exc), retry)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("feature store error: %s", exc, extra={"cause": "store_error"})
        app.state.metrics.errors.labels("store_error").inc()
        return error_response(*known(exc), retry)

    @app.exception_handler(ModelUnavailable)
    async def model_unavailable(request: Request, exc: ModelUnavailable) -> JSONResponse:
        log.error("model endpoint unavailable: %s", exc.reason, extra={"cause": "model_unavailable"})
        app.state.metrics.errors.labels("model_unavailable").inc()
        return error_response(*known(exc), retry)

    @app.exception_handler(ModelTimeout)
    async def model_timeout(request: Request, exc: ModelTimeout) -> JSONResponse:
        log.error("model endpoint timed out: %s", exc.reason, extra={"cause": "model_timeout"})
        app.state.metrics.errors.labels("model_timeout").inc()
        return error_response(*known(exc))

    @app.exception_handler(ModelFailed)
    async def model_failed(request: Request, exc: ModelFailed) -> JSONResponse:
        log.error("model endpoint failed: %s", exc.reason, extra={"cause": "model_failed"})
        app.state.metrics.errors.labels("model_failed").inc()
        return error_response(*known(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, jsonable_encoder(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"cause": "bug"})
        return error_response(500, "internal error: the operators have the details in the log under this request id")
