"""The console end to end in a real headless Chromium (Debian's `chromium`, driven by the PyPI `playwright` wheel).

Signs in by typing the key, looks up a known and an unknown id with the keyboard, opens
each page, and compares what the page shows with what the API answers. Screenshots are
kept under the test's tmp folder (and copied to .state/test-artifacts/console/).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import API_KEY, CUSTOMERS, serve_app
from tests.browser import chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / ".state" / "test-artifacts" / "console"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


@pytest.fixture
def console(console_settings):
    from api.main import create_app

    server = serve_app(create_app(console_settings))
    yield server
    server.stop()


def api(console, path: str) -> httpx.Response:
    return httpx.get(f"{console.url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)


def test_a_person_signs_in_finds_customers_models_and_data(browser, console, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    # Refusals by the Content-Security-Policy, script errors, and subresources that failed (pages answering
    # 401/404 on purpose are documents, and Chromium's own /favicon.ico probe is not the console's).
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400
            and r.request.resource_type != "document"
            and not r.url.endswith("/favicon.ico")
            and not r.request.headers.get("hx-request")
            else None
        ),
    )
    try:
        # Nothing without signing in; a wrong key says so.
        page.goto(f"{console.url}/console/models")
        assert "/console/sign-in" in page.url
        page.fill("#api-key", "smk_not-a-key")
        page.keyboard.press("Enter")
        assert "wrong API key" in page.get_by_test_id("sign-in-error").inner_text()
        page.screenshot(path=str(shots / "1-wrong-key.png"))

        page.fill("#api-key", API_KEY)
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/models")
        assert context.cookies()[0]["httpOnly"] is True and context.cookies()[0]["sameSite"] == "Strict"

        # A known id, typed and sent with the keyboard: htmx swaps the result in.
        page.goto(f"{console.url}/console/customer")
        known = CUSTOMERS[13]
        page.focus("#customer-id")
        page.keyboard.type(str(known))
        page.keyboard.press("Enter")
        page.get_by_test_id("probability").wait_for()
        answer = api(console, f"/predict/{known}?explain=true").json()
        assert page.get_by_test_id("probability").inner_text() == f"{answer['probability']:.4f}"
        assert page.get_by_test_id("model-version").inner_text() == answer["model_version"]
        assert page.get_by_test_id("threshold").inner_text() == str(answer["threshold"])
        shown_reasons = page.locator("[data-testid=reasons] li").all_inner_texts()
        assert [text.rsplit(" +", 1)[0] for text in shown_reasons] == [r["text"] for r in answer["reasons"]]
        assert page.locator("svg[data-testid=contributions] rect[data-feature]").count() == 5
        assert f"id={known}" in page.url  # the lookup is in the address bar: a link to it works
        page.screenshot(path=str(shots / "2-customer.png"), full_page=True)

        # An unknown id: the API's message.
        page.fill("#customer-id", "1")
        page.keyboard.press("Enter")
        page.get_by_test_id("lookup-error").wait_for()
        assert api(console, "/predict/1").json()["detail"] == page.get_by_test_id("lookup-error").inner_text()
        page.screenshot(path=str(shots / "3-unknown.png"))

        # Each page, reached by following the navigation.
        for name, marker in (("Models", "versions"), ("Data", "snapshots"), ("Monitoring", None)):
            page.get_by_role("link", name=name, exact=True).click()
            page.wait_for_url(f"**/console/{name.lower()}")
            if marker:
                page.get_by_test_id(marker).wait_for()
            page.screenshot(path=str(shots / f"4-{name.lower()}.png"), full_page=True)
        page.goto(f"{console.url}/console/models")
        assert page.get_by_test_id("production").inner_text() == "2"
        assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")  # the plots load

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/console/sign-in")
        page.goto(f"{console.url}/console/data")
        assert "/console/sign-in" in page.url
        # No script, style or request was refused by the Content-Security-Policy, nothing failed to load.
        assert not errors, errors
    finally:
        context.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copy(shot, ARTIFACTS / shot.name)
