"""Dependencies handed to routes: the clients created in the lifespan, and the API-key check.

The clients travel together as one `Services` object (`ServicesDep`): FastAPI resolves
each dependency per request, and one lookup costs less than six. Tests swap a client for
another real backend with
`app.dependency_overrides[get_services] = lambda: dataclasses.replace(services, store=other)`.
Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency on a worker
thread, a hop that costs more than handing out an object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from api.model_endpoint import ModelEndpoint, RegistryThresholds
from api.observability import Metrics
from api.prediction_log import LogWriter
from configuration.settings import Settings
from features.online.base import OnlineStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: OnlineStore
    model: ModelEndpoint
    log_writer: LogWriter
    metrics: Metrics
    thresholds: RegistryThresholds


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

bearer = HTTPBearer(
    auto_error=False, description="An API key from `python -m api keygen`: Authorization: Bearer <key>."
)


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    address = request.client.host if request.client else "unknown"
    request.app.state.keys.check(address, credentials.credentials if credentials else None)


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header as `bearer` (HTTPBearer, auto_error off) reads it, or None.

    For the raw GET /predict/{id} (api.routes.predict_raw), which has no FastAPI dependencies:
    the same function of FastAPI's parses the header, so both paths take and refuse the same headers.
    """
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials
