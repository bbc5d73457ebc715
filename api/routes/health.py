"""GET /health (the process answers) and GET /ready (the feature store and the model endpoint answer)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ServicesDep
from api.model_endpoint import ModelEndpointError
from api.observability import current_request_id
from api.schemas import Health, Ready
from features.online.base import StoreError

router = APIRouter(tags=["operations"])
log = logging.getLogger("api")


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> dict:
    return {"status": "ok"}


async def _check_store(store) -> tuple[bool, str]:
    try:
        await store.ping_async()
        snapshot = await store.current_snapshot_async()
    except StoreError as exc:
        log.warning("not ready: feature store: %s", exc)
        return False, "unreachable (the reason is in the API's log)"
    if snapshot is None:
        return False, "reachable, but no feature snapshot is materialized yet"
    return True, f"snapshot {snapshot.run_id} (as of {snapshot.as_of}, {snapshot.rows} customers)"


async def _check_model(model) -> tuple[bool, str]:
    try:
        await model.ping()
    except ModelEndpointError as exc:
        log.warning("not ready: model endpoint: %s", exc.reason)
        return False, "unreachable (the reason is in the API's log)"
    return True, f"{model.kind} endpoint answers"


@router.get(
    "/ready",
    response_model=Ready,
    summary="Readiness: the feature store and the model endpoint answer",
    responses={503: {"model": Ready, "description": "Not ready: see which check failed."}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    (store_ok, store_detail), (model_ok, model_detail) = await asyncio.gather(
        _check_store(services.store), _check_model(services.model)
    )
    body = {
        "ready": store_ok and model_ok,
        "checks": {
            "feature_store": {"ok": store_ok, "detail": store_detail},
            "model_endpoint": {"ok": model_ok, "detail": model_detail},
        },
        "request_id": current_request_id(),
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)
