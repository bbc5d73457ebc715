"""Every console page through FastAPI's TestClient: status, content, and that nothing is readable without a session.

The customer page is compared with what GET /predict/{id}?explain=true answers for the
same id (the API is the reference), and the percentiles with numpy on the snapshot's rows.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.console.session import COOKIE, Sessions
from api.main import create_app
from features.contract import FEATURE_COLUMNS
from tests.api.conftest import API_KEY, CUSTOMERS, RUN_ID, expected_features
from tests.console.conftest import REJECT_COUNTS

PAGES = [
    "/console/customer",
    "/console/models",
    "/console/data",
    "/console/monitoring",
    "/console/models/1/plots/roc",
    "/console/monitoring/report",
    f"/console/customer?id={CUSTOMERS[0]}",
]


@pytest.fixture
def app(console_settings):
    return create_app(console_settings)


@pytest.fixture
def client(app):
    with TestClient(app, base_url="http://127.0.0.1") as session:
        yield session


def sign_in(client, key: str = API_KEY, next: str = "/console/customer"):
    return client.post("/console/sign-in", data={"key": key, "next": next}, follow_redirects=False)


@pytest.fixture
def signed_in(client):
    answer = sign_in(client)
    assert answer.status_code == 303, answer.text
    return client


@pytest.mark.parametrize("path", PAGES)
def test_nothing_is_readable_without_a_session(client, path):
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=")
    assert "probability" not in answer.text
    htmx = client.get(path, headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/console/sign-in")


def test_sign_in_page_has_a_password_field_and_a_strict_policy(client):
    answer = client.get("/console/sign-in")
    assert answer.status_code == 200
    assert re.search(r'<input id="api-key" name="key" type="password"', answer.text)
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert '<script src="/console/static/htmx.min.js"' in answer.text
    assert (
        "http://" not in answer.text.replace("http://127.0.0.1", "") and "https://" not in answer.text
    )  # nothing from elsewhere


def test_a_wrong_key_says_so_and_sets_no_cookie(client):
    answer = sign_in(client, key="smk_wrong")
    assert answer.status_code == 401
    assert "wrong API key" in answer.text
    assert COOKIE not in answer.cookies
    assert "smk_wrong" not in answer.text  # the key is never echoed
    assert sign_in(client, key="").status_code == 401


def test_the_cookie_is_httponly_strict_expiring_and_holds_no_key(client, console_settings):
    answer = sign_in(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/customer"
    header = answer.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/console" in header
    assert f"Max-Age={console_settings.console.session_minutes * 60}" in header
    assert "Secure" not in header  # plain http here; over https (or cookie_secure = always) it is Secure
    token = answer.cookies[COOKIE]
    assert API_KEY not in token and API_KEY[4:20] not in token
    assert client.get("/console/models").status_code == 200


def test_the_cookie_is_secure_behind_https(console_settings):
    app = create_app(console_settings)
    with TestClient(app, base_url="https://console.example") as session:
        header = sign_in(session).headers["set-cookie"]
    assert "Secure" in header


def test_a_forged_expired_or_revoked_session_is_refused(client, console_settings):
    sign_in(client)
    token = client.cookies[COOKIE]
    client.cookies.clear()
    for forged in (token[:-1] + ("0" if token[-1] != "0" else "1"), "1." + token.split(".", 1)[1], "x", "a.b.c.d"):
        client.cookies.set(COOKIE, forged, path="/console")
        assert client.get("/console/models", follow_redirects=False).status_code == 303, forged
        client.cookies.clear()
    from api.auth import hash_key
    from api.console.session import session_secret

    sessions = Sessions(session_secret(console_settings), 60)
    assert sessions.valid(sessions.issue(hash_key(API_KEY)), console_settings.api.api_key_hashes)
    assert not sessions.valid(
        sessions.issue(hash_key(API_KEY), now=time.time() - 120), console_settings.api.api_key_hashes
    )
    assert not sessions.valid(sessions.issue(hash_key(API_KEY)), [hash_key("another-key")])  # key removed: session over
    assert not sessions.valid("é" * 10, console_settings.api.api_key_hashes)


def test_sign_out_ends_the_session(signed_in):
    answer = signed_in.post("/console/sign-out", follow_redirects=False)
    assert answer.status_code == 303
    assert signed_in.get("/console/models", follow_redirects=False).status_code == 303


def test_next_never_leaves_the_console(client):
    for target in ("//evil.example/", "https://evil.example/", "/predict/1", "/console\\..\\x"):
        answer = sign_in(client, next=target)
        assert answer.headers["location"] == "/console/customer", target
        client.cookies.clear()
    assert sign_in(client, next="/console/data").headers["location"] == "/console/data"


def test_customer_page_shows_what_the_api_answers(signed_in, console_settings):
    customer = CUSTOMERS[13]
    page = signed_in.get("/console/customer", params={"id": customer})
    assert page.status_code == 200
    api = signed_in.get(
        f"/predict/{customer}", params={"explain": "true"}, headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()
    html = page.text
    assert re.search(r'data-testid="probability">([0-9.]+)<', html).group(1) == f"{api['probability']:.4f}"
    assert f'data-testid="threshold">{api["threshold"]}<' in html
    assert f'data-testid="model-version">{api["model_version"]}<' in html
    assert RUN_ID in html
    for reason in api["reasons"]:
        assert reason["text"] in html
    shown = re.findall(r'<rect [^>]*data-feature="([^"]+)" data-value="([^"]+)"', html)
    assert sorted(float(v) for _, v in shown) == pytest.approx(
        sorted(api["explanation"]["contributions"].values()), abs=1e-9
    )
    assert 'id="customer-id"' in html


def test_percentiles_match_numpy_on_the_snapshot_and_are_computed_once(signed_in, app):
    features = expected_features()
    customer = CUSTOMERS[41]
    html = signed_in.get("/console/customer", params={"id": customer}).text
    for name in FEATURE_COLUMNS:
        value = features[customer][name]
        population = np.array([f[name] for f in features.values() if f[name] is not None], dtype=float)
        match = re.search(rf'data-testid="percentile-{name}">(\d+)<', html)
        if value is None:
            assert match is None
            continue
        expected = 100 * ((population < value).sum() + (population == value).sum() / 2) / len(population)
        assert int(match.group(1)) == round(expected), name
    for other in CUSTOMERS[:5]:
        signed_in.get("/console/customer", params={"id": other})
    assert app.state.console_population.loads == 1  # once per snapshot, not per request


@pytest.mark.parametrize("raw, status", [("1", 404), ("abc", 422), ("-5", 422), ("99999999999999999999", 422)])
def test_unknown_or_malformed_ids_get_the_apis_message(signed_in, raw, status):
    page = signed_in.get("/console/customer", params={"id": raw})
    api = signed_in.get(f"/predict/{raw}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert page.status_code == status == api.status_code
    detail = api.json()["detail"]
    message = detail if isinstance(detail, str) else detail[0]["msg"]
    assert message in page.text.replace("&#39;", "'")
    partial = signed_in.get("/console/customer", params={"id": raw}, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and message in partial.text.replace("&#39;", "'")
    assert "<html" not in partial.text  # the fragment only


def test_models_page_lists_every_version_production_and_plots(signed_in):
    page = signed_in.get("/console/models")
    assert page.status_code == 200
    html = page.text
    assert re.findall(r'<tr data-version="(\d+)"', html) == ["2", "1"]
    assert 'data-testid="production">2<' in html
    assert "no gate decisions recorded" in html
    assert "Model card: seed 11" in html and "<table>" in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html  # the card's raw HTML is escaped
    assert "/console/models/2/plots/roc" in html and "/console/models/1/plots/calibration" in html
    assert "promote" in html  # the registry history
    image = signed_in.get("/console/models/2/plots/roc")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert signed_in.get("/console/models/2/plots/nope").status_code == 404
    assert signed_in.get("/console/models/99/plots/roc").status_code == 404


def test_data_page_shows_snapshots_rejects_per_reason_and_a_sample(signed_in):
    html = signed_in.get("/console/data").text
    assert f'data-run="{RUN_ID}"' in html and "(current)" in html
    for reason, count in REJECT_COUNTS.items():
        assert f'<th scope="row">{reason}</th><td>{count}</td>' in html
    assert (
        "<td>malformed_row 1, bad_id 1, bad_loan_date 1</td>" in html
    )  # the reasons with rows, in the contract's order
    sample = html[html.index('data-testid="rejects-sample"') :]
    assert "2020-13-40" in sample and "malformed_row" in sample and "abc" in sample
    assert signed_in.get("/console/data", params={"run": "nope"}).status_code == 404


def test_monitoring_page_says_what_is_missing_or_shows_figures(signed_in):
    page = signed_in.get("/console/monitoring")
    assert page.status_code == 200
    try:
        import monitoring  # noqa: F401
    except ImportError:
        assert "monitoring package is not installed" in page.text
    else:
        assert 'data-testid="monitoring-missing"' in page.text or 'data-testid="monitoring-figures"' in page.text


def test_static_files_are_served_without_a_session(client):
    js = client.get("/console/static/htmx.min.js")
    assert js.status_code == 200 and js.text.startswith("/* htmx 2.")
    assert client.get("/console/static/console.css").status_code == 200


def test_console_routes_are_not_in_the_openapi_schema(client):
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/console")]


def test_an_unreachable_model_endpoint_gets_the_apis_message(console_settings):
    from tests.online.conftest import closed_port

    settings = console_settings.model_copy(
        update={"api": console_settings.api.model_copy(update={"model_url": f"http://127.0.0.1:{closed_port()}"})}
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as session:
        sign_in(session)
        page = session.get("/console/customer", params={"id": CUSTOMERS[0]})
        api = session.get(f"/predict/{CUSTOMERS[0]}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert page.status_code == api.status_code == 503
    assert api.json()["detail"] in page.text


def test_the_session_key_is_private_and_made_on_first_use(console_settings):
    import stat
    from pathlib import Path

    key_file = Path(console_settings.paths.state_dir) / "console-session.key"
    app = create_app(console_settings)
    assert not key_file.exists()  # building the app touches nothing
    with TestClient(app, base_url="http://127.0.0.1") as session:
        sign_in(session)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
