"""Schemathesis against the API's own OpenAPI schema, over real HTTP, with every backend running.

Every operation is generated from the schema (positive and negative cases); each answer
is checked by schemathesis's default checks: no 5xx, documented status codes, content
types, headers and bodies matching the schema, valid data accepted, invalid data
rejected, and the auth check (the same case without the key must get 401). Nothing is
excluded. The id examples in the schema are real customers of the fixture snapshot, so
the 200 paths are exercised, not only 404s.

The schema is taken from the app built with the test's settings at import time
(`schemathesis.pytest.from_fixture` fails under pytest 9 in schemathesis 4.32: it sets
`Function._nodeid`, which pytest 9 no longer has); a test checks it is the very schema the
running server publishes.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.auth import hash_key
from configuration.settings import load_settings
from tests.api.conftest import API_KEY, deploy, teardown_deployment

MAX_BATCH = 20


def _schema_document() -> dict:
    from api.main import create_app

    return create_app(load_settings(api={"api_key_hashes": [hash_key(API_KEY)], "max_batch": MAX_BATCH})).openapi()


DOCUMENT = _schema_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def live_api(request, tmp_path_factory, model_server):
    deployed = deploy(
        tmp_path_factory.mktemp("schemathesis"), request, "sqlite", "sqlite", model_server.url, max_batch=MAX_BATCH
    )
    yield deployed
    teardown_deployment(deployed)


def test_the_running_server_publishes_this_schema(live_api):
    assert live_api.client.get("/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_openapi_schema(case, live_api):
    case.call_and_validate(base_url=live_api.api.url, headers={"Authorization": f"Bearer {API_KEY}"})
