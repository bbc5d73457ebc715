"""The public interface is frozen in api/openapi.json: an unintended change fails here.

An intended change: `python -m api openapi --write`, and commit the new file with the change.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

from api import openapi
from configuration.settings import REPO_ROOT


def frozen() -> dict:
    return json.loads(openapi.FROZEN.read_text(encoding="utf-8"))


def test_the_code_makes_exactly_the_frozen_document():
    found = openapi.differences(frozen(), openapi.current_document())
    assert not found, (
        f"the API's OpenAPI document differs from api/openapi.json at {found[:10]}: if the change is intended, "
        "run python -m api openapi --write and commit api/openapi.json"
    )


def test_the_frozen_document_holds_the_routes_and_fields_clients_use():
    # Written out by hand: the interface README and clients rely on, independent of the generator.
    document = frozen()
    assert {(path, method) for path, item in document["paths"].items() for method in item} >= {
        ("/predict/{id}", "get"),
        ("/predict", "post"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    }
    prediction = document["components"]["schemas"]["Prediction"]["properties"]
    assert set(prediction) >= {
        "id",
        "probability",
        "label",
        "threshold",
        "model_version",
        "features",
        "feature_snapshot",
        "request_id",
    }
    parameters = {p["name"]: p for p in document["paths"]["/predict/{id}"]["get"]["parameters"]}
    assert set(parameters) == {"id", "explain"}
    parameter = parameters["id"]
    assert parameter["schema"]["type"] == "integer" and parameter["schema"]["maximum"] == 2**53 - 1
    batch = document["components"]["schemas"]["BatchRequest"]["properties"]["ids"]
    assert batch["maxItems"] == 100 and batch["minItems"] == 1  # api.max_batch of the tracked configuration


def test_differences_name_what_changed():
    before = frozen()
    after = copy.deepcopy(before)
    del after["components"]["schemas"]["Prediction"]["properties"]["label"]
    after["components"]["schemas"]["Prediction"]["properties"]["comment"] = {"type": "string"}
    after["info"]["version"] = "2.0.0"
    assert openapi.differences(before, after) == [
        "/components/schemas/Prediction/properties/comment added",
        "/components/schemas/Prediction/properties/label removed",
        "/info/version changed",
    ]


def test_the_check_command_fails_on_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "openapi.json"
    stale.write_text(json.dumps({**frozen(), "info": {"title": "old", "version": "0"}}))
    monkeypatch.setattr(openapi, "FROZEN", stale)
    assert openapi.main(write=False, check=True) == 1
    done = subprocess.run(
        [sys.executable, "-m", "api", "openapi", "--check"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "is current" in done.stdout, done.stdout + done.stderr
