"""GET /predict/{id} and POST /predict (API key required)."""

# No `from __future__ import annotations` here: FastAPI must see the body model built in build_router.

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from api import service
from api.deps import ServicesDep, require_api_key
from api.errors import ApiError
from api.observability import current_request_id
from api.schemas import ID_MAX, ID_MIN, BatchPrediction, ErrorBody, Prediction, batch_request_model, decimal_digits

RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key."},
    413: {"model": ErrorBody, "description": "The request body is larger than api.max_body_bytes."},
    429: {
        "model": ErrorBody,
        "description": "Too many failed authentications from this address: wait Retry-After seconds.",
        "headers": RETRY,
    },
    502: {"model": ErrorBody, "description": "The model endpoint answered with an error."},
    503: {
        "model": ErrorBody,
        "description": "The feature store or the model endpoint is unreachable.",
        "headers": RETRY,
    },
    504: {"model": ErrorBody, "description": "The model endpoint did not answer in time (api.timeout_seconds)."},
}


def only_query(*allowed: str) -> Any:
    """A 422 for a query parameter the route does not take: a misspelt `?explian=true` must not be ignored silently."""

    def check(request: Request) -> None:
        extra = [name for name in request.query_params if name not in allowed]
        if extra:
            takes = ", ".join(allowed) or "no query parameters"
            raise RequestValidationError(
                [
                    {
                        "type": "extra_forbidden",
                        "loc": ("query", extra[0]),
                        "input": request.query_params[extra[0]],
                        "msg": f"unknown query parameter (this route takes {takes})",
                    }
                ]
            )

    return Depends(check)


def build_router(max_batch: int) -> APIRouter:
    router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key)])
    BatchRequest = batch_request_model(max_batch)

    @router.get(
        "/predict/{id}",
        response_model=Prediction,
        summary="Score one customer",
        responses={
            **COMMON_ERRORS,
            404: {"model": ErrorBody, "description": "The id is not in the current feature snapshot."},
        },
        dependencies=[only_query("explain")],
    )
    async def predict_one(
        # BeforeValidator beside Path (not in a nested Annotated alias, which loses minimum/maximum from the schema).
        id: Annotated[
            int,
            Path(ge=ID_MIN, le=ID_MAX, description="Customer id, e.g. 5008804.", examples=[5008804]),
            BeforeValidator(decimal_digits),
        ],
        services: ServicesDep,
        explain: Annotated[bool, Query(description="Add explanation (exact TreeSHAP, log-odds) and reasons.")] = False,
    ) -> JSONResponse:
        scoring = await service.score([id], services, explain)
        if not scoring.scored:
            missing = await service.no_snapshot_error(services.store)
            if missing:
                raise missing
            raise ApiError(404, service.not_found_message(id))
        service.log_scoring(services.log_writer, scoring)
        body = service.item(scoring.scored[0], scoring)
        body["request_id"] = current_request_id()
        # Built from typed values already checked on the way in: the response model documents it.
        return JSONResponse(body)

    @router.post(
        "/predict",
        response_model=BatchPrediction,
        summary=f"Score up to {max_batch} customers in one model call",
        responses={**COMMON_ERRORS, 400: {"model": ErrorBody, "description": "The body is not JSON."}},
        dependencies=[only_query()],
    )
    async def predict_many(
        request: Annotated[BatchRequest, Body()],  # type: ignore[valid-type]
        services: ServicesDep,
    ) -> JSONResponse:
        ids = list(request.ids)  # type: ignore[attr-defined]  # BatchRequest is built at run time (max_batch)
        explain = request.explain  # type: ignore[attr-defined]  # BatchRequest is built at run time (max_batch)
        scoring = await service.score(ids, services, explain)
        if not scoring.scored:
            missing = await service.no_snapshot_error(services.store)
            if missing:
                raise missing
        service.log_scoring(services.log_writer, scoring)
        return JSONResponse(
            {
                "predictions": [service.item(s, scoring) for s in scoring.scored],
                "not_found": scoring.not_found,
                "request_id": current_request_id(),
            }
        )

    return router
