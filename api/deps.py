"""Dependencies handed to routes: the clients created in the lifespan, the settings, the API-key check.

Routes take them as `Annotated` aliases (`StoreDep`, `ModelDep`, ...); tests swap one for
another real backend with `app.dependency_overrides[get_store] = ...`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.model_endpoint import ModelEndpoint, RegistryThresholds
from api.observability import Metrics
from api.prediction_log import LogWriter
from configuration.settings import Settings
from features.online.base import OnlineStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> OnlineStore:
    return request.app.state.store


def get_model(request: Request) -> ModelEndpoint:
    return request.app.state.model


def get_log_writer(request: Request) -> LogWriter:
    return request.app.state.log_writer


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_thresholds(request: Request) -> RegistryThresholds:
    return request.app.state.thresholds


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[OnlineStore, Depends(get_store)]
ModelDep = Annotated[ModelEndpoint, Depends(get_model)]
LogDep = Annotated[LogWriter, Depends(get_log_writer)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ThresholdsDep = Annotated[RegistryThresholds, Depends(get_thresholds)]

bearer = HTTPBearer(auto_error=False, description="An API key from `python -m api keygen`: Authorization: Bearer <key>.")


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    checker = request.app.state.keys
    if not checker.enabled:
        return
    if credentials is None:
        raise ApiError(401, "missing API key: send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    if not checker.verify(credentials.credentials):
        # Nothing of the key is logged or echoed: only that one was refused.
        raise ApiError(401, "wrong API key: send a key whose sha256 is in api.api_key_hashes", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
