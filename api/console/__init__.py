"""The web console under /console: a person signs in with an API key and looks up customers, models, data, monitoring.

    install(app, settings)      mount the routes and the static files on the API's app (api.main)

Server-side Jinja2 templates (api/console/templates), one stylesheet and the vendored htmx
(api/console/static/htmx.min.js, 0BSD) for the customer lookup; nothing is fetched from
elsewhere. Pages: api.console.routes; what they read: api.console.pages; sessions:
api.console.session; population percentiles: api.console.population.
"""

from __future__ import annotations

from pathlib import Path

from configuration.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"


def install(app, settings: Settings) -> None:
    from fastapi.staticfiles import StaticFiles

    from api.console.population import Population
    from api.console.routes import SignInNeeded, build_router, to_sign_in
    from api.console.session import Sessions, session_secret

    sessions = Sessions(lambda: session_secret(settings), settings.console.session_minutes * 60)
    app.state.console_population = Population(settings)
    app.include_router(build_router(settings, sessions, app.state.console_population))
    app.add_exception_handler(SignInNeeded, to_sign_in)
    app.mount("/console/static", StaticFiles(directory=str(STATIC)), name="console-static")
