"""GET /metrics: Prometheus text format from the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}
    },
)
async def metrics(request: Request) -> Response:
    metrics = request.app.state.metrics
    services = getattr(request.app.state, "services", None)
    if services is not None:
        metrics.log_queue.set(services.log_writer.waiting())
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
