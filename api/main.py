"""The app: settings in, routes, middleware and error handlers wired; clients made in the lifespan.

    create_app(settings)            the FastAPI app (tests build it with their own settings)
    app_from_settings()             uvicorn's factory for `python -m api` (each worker reads the settings)

Nothing is connected at import or in create_app: the store, the model endpoint client and
the prediction-log writer are created when the server starts (lifespan) and closed when
it stops, after the log writer has written everything queued.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.auth import FailureLimiter, KeyChecker
from api.body_limit import BodyLimitMiddleware
from api.deps import Services
from api.model_endpoint import RegistryThresholds, open_model_endpoint
from api.observability import Metrics, MonitoringCollector, RequestMiddleware, configure_logging
from api.prediction_log import LogWriter, open_prediction_log
from api.routes import health, metrics, predict
from api.routes.predict_raw import RawPredictOne
from api.service import settings_summary
from configuration.errors import UserError
from configuration.settings import Settings, load_settings
from features.online import open_store

log = logging.getLogger("api")

DESCRIPTION = """\
Credit-risk predictions by customer id: the customer's latest features from the online
feature store, scored by the model endpoint, answered with their provenance (model
version, feature snapshot, request id) and logged.

Send `Authorization: Bearer <key>` to the /predict routes (`python -m api keygen` makes a key).
"""


def check_auth_settings(settings: Settings) -> None:
    if settings.api.auth_enabled and not settings.api.api_key_hashes:
        raise UserError(
            "API keys are required (api.auth_enabled) but api.api_key_hashes is empty: "
            "run python -m api keygen --write, or set api.auth_enabled = false for a local trial"
        )


class PredictionApi(FastAPI):
    """FastAPI, with the plain GET /predict/{id} answered before its middleware stack (api.routes.predict_raw)."""

    raw: RawPredictOne | None = None

    async def __call__(self, scope, receive, send) -> None:
        if self.raw is None:
            await super().__call__(scope, receive, send)
        else:
            await self.raw(scope, receive, send)  # hands everything but the plain request on to FastAPI's own


def create_app(settings: Settings) -> PredictionApi:
    check_auth_settings(settings)
    app_metrics = Metrics()
    app_metrics.registry.register(MonitoringCollector(settings))  # the latest drift figures (monitoring)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        api = settings.api
        store = open_store(settings)
        model = open_model_endpoint(settings, on_shared_call=app_metrics.saw_shared_call)
        backend = open_prediction_log(settings)
        writer = LogWriter(
            backend,
            api.log_flush_entries,
            api.log_flush_ms,
            api.log_queue_max,
            on_written=app_metrics.log_written.inc,
            on_dropped=app_metrics.log_dropped.inc,
        ).start()
        app.state.services = Services(
            settings=settings,
            store=store,
            model=model,
            log_writer=writer,
            metrics=app_metrics,
            thresholds=RegistryThresholds(settings),
        )
        # Everything loaded so far (FastAPI, pydantic, the clients: ~80,000 objects) lives as
        # long as the process: move it out of the collector's sight, so that a full collection
        # walks only what requests allocate instead of stalling the requests in flight ~20 ms.
        gc.freeze()
        log.info(
            "prediction API ready to serve: %s",
            settings_summary(settings),
            extra={"store": store.describe(), "model_endpoint": model.describe(), "prediction_log": backend.describe()},
        )
        try:
            yield
        finally:
            writer.close()
            await model.aclose()
            await store.aclose()
            log.info("prediction API stopped", extra={"log_written": writer.written, "log_dropped": writer.dropped})

    app = PredictionApi(
        title="sparkmaker prediction API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    api = settings.api
    app.state.keys = KeyChecker(
        api.api_key_hashes,
        enabled=api.auth_enabled,
        limiter=FailureLimiter(api.auth_max_failures, api.auth_failure_window_seconds, api.auth_max_addresses),
        on_failure=app_metrics.auth_failures.inc,
        on_throttled=app_metrics.auth_throttled.inc,
    )
    app.include_router(predict.build_router(settings.api.max_batch))
    app.include_router(health.router)
    app.include_router(metrics.router)
    if settings.console.enabled:  # the web console under /console (api.console)
        from api import console

        console.install(app, settings)
    errors.install(app, settings.api.retry_after_seconds, settings.api.timeout_seconds)
    # Bodies over api.max_body_bytes are 413 before they are read whole (inside RequestMiddleware: the 413 has a request id).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestMiddleware, metrics=app_metrics, on_bug=errors.unexpected_failure)
    app.raw = RawPredictOne(super(PredictionApi, app).__call__, api=app)
    return app


def app_from_settings() -> PredictionApi:
    """uvicorn's factory (`api.main:app_from_settings`)."""
    configure_logging()
    return create_app(load_settings())
