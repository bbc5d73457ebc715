"""API keys: Bearer keys checked against sha256 digests, 401 with WWW-Authenticate, keys never logged."""

from __future__ import annotations

import logging

import pytest

from api.auth import KeyChecker, append_hash, generate_key, hash_key
from configuration.errors import UserError
from tests.api.conftest import API_KEY, CUSTOMERS, deploy, teardown_deployment


def test_missing_key_is_401_with_www_authenticate(deployment):
    for response in (
        deployment.get(f"/predict/{CUSTOMERS[0]}", key=None),
        deployment.post("/predict", {"ids": [1]}, key=None),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "missing API key" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Bearer wrong-key", f"Basic {API_KEY}", f"Bearer {API_KEY}x", "Bearer", API_KEY])
def test_wrong_or_malformed_credentials_are_401(deployment, header):
    response = deployment.client.get(f"/predict/{CUSTOMERS[0]}", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_operations_routes_need_no_key(deployment):
    for path in ("/health", "/ready", "/metrics", "/docs", "/openapi.json"):
        assert deployment.client.get(path).status_code == 200, path


def test_keys_are_not_logged_in_clear(deployment, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "smk_this-must-never-appear-in-a-log"
    deployment.get(f"/predict/{CUSTOMERS[0]}", key=wrong)
    deployment.get(f"/predict/{CUSTOMERS[0]}")
    deployment.get("/predict/1")
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "/predict/" in text  # the access log was captured
    assert wrong not in text and API_KEY not in text


def test_auth_off_serves_without_a_key(request, tmp_path, model_server):
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url, auth_enabled=False, api_key_hashes=[])
    try:
        assert deployed.get(f"/predict/{CUSTOMERS[0]}", key=None).status_code == 200
    finally:
        teardown_deployment(deployed)


def test_auth_on_without_any_key_refuses_to_start(tmp_path):
    from api.main import create_app
    from configuration.settings import load_settings

    with pytest.raises(UserError, match="api.api_key_hashes is empty: run python -m api keygen --write"):
        create_app(load_settings(paths={"state_dir": str(tmp_path)}))


def test_key_checker_accepts_only_the_keys_whose_digest_is_kept():
    keys = [generate_key() for _ in range(3)]
    assert len(set(keys)) == 3 and all(len(k) > 40 for k in keys)
    checker = KeyChecker([hash_key(k) for k in keys[:2]])
    assert checker.verify(keys[0]) and checker.verify(keys[1])
    assert not checker.verify(keys[2]) and not checker.verify("") and not checker.verify(hash_key(keys[0]))
    import hashlib

    assert hash_key("abc") == hashlib.sha256(b"abc").hexdigest()  # the documented digest, computed independently


def test_append_hash_keeps_the_file_and_merges_into_an_existing_api_table(tmp_path):
    import tomllib

    config = tmp_path / "local.toml"
    append_hash(config, "a" * 64)
    assert tomllib.loads(config.read_text())["api"]["api_key_hashes"] == ["a" * 64]
    config.write_text(
        '# mine\n[paths]\nlake = "/data"  # keep me\n\n[api]\nport = 9000\napi_key_hashes = [\n  "'
        + "b" * 64
        + '",\n]\n\n[spark]\nmaster = "local[4]"\n'
    )
    append_hash(config, "c" * 64)
    append_hash(config, "c" * 64)  # twice: kept once
    parsed = tomllib.loads(config.read_text())
    assert parsed["api"] == {"port": 9000, "api_key_hashes": ["b" * 64, "c" * 64]}
    assert parsed["paths"] == {"lake": "/data"} and parsed["spark"] == {"master": "local[4]"}
    assert "# keep me" in config.read_text() and config.read_text().startswith("# mine")
    config.write_text("[api]\nport = 9000\n")
    append_hash(config, "d" * 64)
    assert tomllib.loads(config.read_text())["api"] == {"port": 9000, "api_key_hashes": ["d" * 64]}
    config.write_text("[api\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        append_hash(config, "e" * 64)
