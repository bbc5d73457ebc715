"""The console's routes: sign-in, customer, models, data, monitoring (server-side Jinja2 templates, htmx for the lookup).

Read-only: every page only reads (the lookup scores and logs like GET /predict?explain=true).
Every page needs a session (api.console.session) once API keys are on; a page asked for
without one redirects to the sign-in page (an htmx request gets 401 and HX-Redirect).
Every answer carries a strict Content-Security-Policy: scripts and styles from this
origin only (the vendored htmx file, one stylesheet), no inline script, nothing from
elsewhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from api import service
from api.auth import hash_key
from api.console import pages
from api.console.population import Population
from api.console.session import COOKIE, Sessions
from api.errors import ApiError, failure_answer
from api.schemas import ID_MAX, ID_MIN, decimal_digits
from configuration.settings import Settings
from features.contract import FEATURE_COLUMNS
from features.reasons import BY_FEATURE, sentence

log = logging.getLogger("api.console")

HERE = Path(__file__).resolve().parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The monitoring report is the monitoring package's self-contained HTML (inline styles, data: images), no scripts.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; base-uri 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The API's own path id: its bounds, its strict digits and pydantic's messages.
CUSTOMER_ID = TypeAdapter(Annotated[int, Field(ge=ID_MIN, le=ID_MAX), BeforeValidator(decimal_digits)])
NAV = [("customer", "Customer"), ("models", "Models"), ("data", "Data"), ("monitoring", "Monitoring")]


class SignInNeeded(Exception):
    """A page was asked for without a valid session (api.console.install answers it with `to_sign_in`)."""


def _secure(response: Response, csp: str = CSP) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers["Content-Security-Policy"] = csp
    return response


async def to_sign_in(request: Request, exc: Exception | None = None) -> Response:
    """To the sign-in page, and back here after it (an htmx request is told with HX-Redirect)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"/console/sign-in?next={quote(target, safe='')}"
    if request.headers.get("hx-request"):
        return _secure(Response(status_code=401, headers={"HX-Redirect": location}))
    return _secure(RedirectResponse(location, status_code=303))


def build_router(settings: Settings, sessions: Sessions, population: Population) -> APIRouter:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    router = APIRouter(prefix="/console", include_in_schema=False)

    def keys(request: Request):
        return request.app.state.keys

    def key_digests() -> list[str]:
        return list(settings.api.api_key_hashes)

    def signed_in(request: Request) -> bool:
        return not keys(request).enabled or sessions.valid(request.cookies.get(COOKIE), key_digests())

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("nav", NAV)
        context.setdefault("auth_enabled", keys(request).enabled)
        return _secure(templates.TemplateResponse(request, name, context, status_code=status))

    async def require_session(request: Request) -> None:
        if not signed_in(request):
            raise SignInNeeded

    session = [Depends(require_session)]

    @router.get("")
    @router.get("/")
    async def home(request: Request) -> Response:
        return _secure(
            RedirectResponse("/console/customer" if signed_in(request) else "/console/sign-in", status_code=303)
        )

    # Sign-in --------------------------------------------------------------------------------
    def _next(value: str | None) -> str:
        # Only a page of the console: never another site (//host) or another path of the API.
        if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value:
            return value
        return "/console/customer"

    @router.get("/sign-in")
    async def sign_in_page(request: Request, next: str | None = None) -> Response:
        if signed_in(request):
            return _secure(RedirectResponse(_next(next), status_code=303))
        return render(request, "sign_in.html", next=_next(next), message=None)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        body = (await request.body())[:4096].decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        key, target = form.get("key", "").strip(), _next(form.get("next"))
        address = request.client.host if request.client else "unknown"
        try:
            if not key:
                raise ApiError(401, "type an API key: python -m api keygen makes one, ./start.sh prints it")
            keys(request).check(address, key)  # the API's one key check, with its rate limit of failures
        except ApiError as error:
            return render(request, "sign_in.html", status=error.status_code, next=target, message=error.detail)
        response = RedirectResponse(target, status_code=303)
        secure = settings.console.cookie_secure == "always" or (
            settings.console.cookie_secure == "auto" and request.url.scheme == "https"
        )
        response.set_cookie(
            COOKIE,
            sessions.issue(hash_key(key)),
            max_age=int(sessions.lifetime_seconds),
            path="/console",
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        return _secure(response)

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        response = RedirectResponse("/console/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
        return _secure(response)

    # Customer -------------------------------------------------------------------------------
    async def lookup(request: Request, raw: str) -> dict[str, Any]:
        try:
            customer = CUSTOMER_ID.validate_python(raw.strip())
        except ValidationError as exc:
            return {"error": f"customer id {raw.strip()[:40]!r}: {exc.errors()[0]['msg']}", "status": 422}
        services = request.app.state.services
        try:
            scoring = await service.score([customer], services, explain=True)
            if not scoring.scored:
                missing = await service.no_snapshot_error(services.store)
                raise missing or ApiError(404, service.not_found_message(customer))
        except ApiError as error:
            return {"error": error.detail, "status": error.status_code}
        except Exception as exc:
            answer = failure_answer(exc, settings.api.timeout_seconds)
            if answer is None:
                raise
            log.error("console lookup failed: %s", exc)
            return {"error": answer[1], "status": answer[0]}
        service.log_scoring(services.log_writer, scoring)
        scored = scoring.scored[0]
        record = scored.record
        try:
            standing = await run_in_threadpool(population.standing, record.run_id, record.features)
            standing_note = None
        except Exception as exc:  # the lookup stands without percentiles
            log.warning("population of snapshot %s unavailable: %s", record.run_id, exc)
            standing, standing_note = dict.fromkeys(FEATURE_COLUMNS), f"percentiles unavailable: {pages._one_line(exc)}"
        return {
            "error": None,
            "status": 200,
            "item": service.item(scored, scoring),
            "features": [
                {
                    "name": n,
                    "value": record.features[n],
                    "text": sentence(n, record.features[n]),
                    "standing": standing[n],
                }
                for n in FEATURE_COLUMNS
            ],
            "standing_note": standing_note,
            "chart": contribution_chart(scored.explanation.contributions if scored.explanation else {}),
        }

    @router.get("/customer", dependencies=session)
    async def customer(request: Request, id: str | None = None) -> Response:
        result = await lookup(request, id) if id is not None and id.strip() else None
        partial = bool(request.headers.get("hx-request")) and not request.headers.get("hx-history-restore-request")
        if partial:  # htmx swaps only 2xx answers: the fragment itself says what went wrong
            return render(request, "_customer_result.html", result=result)
        status = result["status"] if result else 200
        return render(request, "customer.html", status=status, page="customer", query=id or "", result=result)

    # Models, data, monitoring -----------------------------------------------------------------
    @router.get("/models", dependencies=session)
    async def models(request: Request) -> Response:
        return render(request, "models.html", page="models", **await run_in_threadpool(pages.models_page, settings))

    @router.get("/models/{version}/plots/{plot}", dependencies=session)
    async def plot(request: Request, version: str, plot: str) -> Response:
        path = await run_in_threadpool(pages.plot_path, settings, version, plot)
        if path is None:
            return render(
                request, "message.html", status=404, page="models", message=f"no {plot} plot for version {version}"
            )
        return _secure(FileResponse(path, media_type="image/png"))

    @router.get("/data", dependencies=session)
    async def data(request: Request, run: str | None = None) -> Response:
        context = await run_in_threadpool(pages.data_page, settings, run)
        return render(request, "data.html", status=404 if context.get("error") and run else 200, page="data", **context)

    @router.get("/monitoring", dependencies=session)
    async def monitoring(request: Request) -> Response:
        return render(
            request, "monitoring.html", page="monitoring", **await run_in_threadpool(pages.monitoring_page, settings)
        )

    @router.get("/monitoring/report", dependencies=session)
    async def monitoring_report(request: Request) -> Response:
        try:
            html = await run_in_threadpool(pages.monitoring_report, settings)
        except ImportError:
            return render(
                request,
                "message.html",
                status=404,
                page="monitoring",
                message="the monitoring package is not installed here",
            )
        except Exception as exc:
            return render(request, "message.html", status=404, page="monitoring", message=pages._one_line(exc))
        return _secure(HTMLResponse(html), REPORT_CSP)

    return router


def contribution_chart(contributions: dict[str, float], width: int = 640, bar: int = 26) -> dict[str, Any]:
    """Bars of the TreeSHAP contributions, largest first, for an inline SVG: rightwards raises the risk."""
    items = sorted(contributions.items(), key=lambda kv: -kv[1])
    scale = max((abs(v) for _, v in items), default=0.0) or 1.0
    label_width, half = 300, (width - 300) / 2
    zero = label_width + half
    bars = []
    for index, (name, value) in enumerate(items):
        length = abs(value) / scale * (half - 50)
        bars.append(
            {
                "y": index * bar,
                "x": zero if value >= 0 else zero - length,
                "width": max(length, 1.0),
                "value": value,
                "label": (BY_FEATURE[name].code + " " if value > 0 else "") + name,
                "raises": value > 0,
                "text_x": zero + length + 4 if value >= 0 else zero - length - 4,
            }
        )
    return {"bars": bars, "width": width, "height": len(items) * bar + 4, "zero": zero, "bar": bar - 6}
