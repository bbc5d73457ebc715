"""Failed authentications are rate limited per client address (429 + Retry-After), counted in /metrics,
in a bounded table; start.sh and `python -m api keygen` make keys with the one 256-bit generator."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from api.auth import FailureLimiter, generate_key
from configuration.settings import REPO_ROOT
from tests.api.conftest import API_KEY, CUSTOMERS, deploy, free_port, read_metric, teardown_deployment


class Clock:
    """A hand-moved clock, so that the window's arithmetic is checked without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_blocked_after_the_allowed_failures_until_its_window_ends():
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window_seconds=60, max_addresses=100, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60  # 3 failures at t=1000: blocked until 1060
    assert limiter.retry_after("10.0.0.2") is None  # another address is not affected
    clock.now += 45.5
    assert limiter.retry_after("10.0.0.1") == 15  # 14.5 s left, rounded up
    clock.now += 14.5
    assert limiter.retry_after("10.0.0.1") is None  # the window is over: a fresh start
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None


def test_the_table_is_bounded_and_forgets_the_oldest_address_first():
    limiter = FailureLimiter(max_failures=1, window_seconds=60, max_addresses=3, clock=Clock())
    for address in ("a", "b", "c", "d"):
        limiter.failed(address)
    assert len(limiter) == 3
    assert limiter.retry_after("a") is None  # evicted
    assert all(limiter.retry_after(x) == 60 for x in ("b", "c", "d"))


def test_wrong_keys_beyond_the_limit_are_429_with_retry_after_and_counted(request, tmp_path, model_server):
    deployed = deploy(
        tmp_path, request, "sqlite", "sqlite", model_server.url, auth_max_failures=5, auth_failure_window_seconds=120
    )
    try:
        codes = [deployed.get(f"/predict/{CUSTOMERS[0]}", key=f"smk_guess{i}").status_code for i in range(5)]
        assert codes == [401] * 5
        refused = deployed.get(f"/predict/{CUSTOMERS[0]}", key="smk_guess6")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert "too many failed authentications" in refused.json()["detail"]
        # While blocked even the right key is refused: else the answer would tell a guess right from wrong.
        assert deployed.get(f"/predict/{CUSTOMERS[0]}", key=API_KEY).status_code == 429
        assert deployed.post("/predict", {"ids": [CUSTOMERS[0]]}, key=API_KEY).status_code == 429
        # No key is no guess: still the plain 401 that says what to send, and not counted.
        missing = deployed.client.get(f"/predict/{CUSTOMERS[0]}")
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        metrics = deployed.client.get("/metrics").text
        assert read_metric(metrics, "api_auth_failures_total") == 5
        assert read_metric(metrics, "api_auth_throttled_total") == 3
    finally:
        teardown_deployment(deployed)


def test_the_right_key_is_not_slowed_by_others_failures_below_the_limit(request, tmp_path, model_server):
    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url, auth_max_failures=3)
    try:
        assert [deployed.get(f"/predict/{CUSTOMERS[0]}", key="smk_x").status_code for _ in range(2)] == [401, 401]
        assert deployed.get(f"/predict/{CUSTOMERS[0]}").status_code == 200
    finally:
        teardown_deployment(deployed)


def key_bits(key: str) -> int:
    assert key.startswith("smk_")
    token = key.removeprefix("smk_")
    return 8 * len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def test_generated_keys_carry_256_random_bits():
    assert key_bits(generate_key()) == 256


def test_start_sh_and_keygen_make_256_bit_keys(tmp_path, monkeypatch):
    from stack.supervisor import ensure_api_key

    monkeypatch.setenv("SPARKMAKER_API__API_KEY_HASHES", "[]")  # ensure_api_key sets it for the services: undone after
    stack_key, _ = ensure_api_key(tmp_path / "state")
    assert key_bits(stack_key) == 256
    out = subprocess.run(
        [sys.executable, "-m", "api", "keygen"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    cli_key = next(line.split()[1] for line in out.splitlines() if line.startswith("key:"))
    assert key_bits(cli_key) == 256


@pytest.mark.parametrize(
    "field,value", [("auth_max_failures", 0), ("auth_failure_window_seconds", 0), ("auth_max_addresses", 0)]
)
def test_limit_settings_must_be_positive(field, value):
    from configuration.errors import UserError
    from configuration.settings import load_settings

    with pytest.raises(UserError, match=f"api.{field}"):
        load_settings(api={field: value})


@pytest.mark.parametrize("proxy", ["not-an-address", "10.0.0.300", "10.0.0.0/33"])
def test_a_trusted_proxy_must_be_an_address_or_a_network(proxy):
    from configuration.errors import UserError
    from configuration.settings import load_settings

    with pytest.raises(UserError, match="api.trusted_proxies"):
        load_settings(api={"trusted_proxies": [proxy]})


def test_forwarded_addresses_count_only_from_a_trusted_proxy(tmp_path, model_server):
    """`python -m api` as started: a local client that names a new X-Forwarded-For address with each wrong
    key is throttled after api.auth_max_failures all the same, unless loopback is listed as a trusted proxy."""
    import httpx

    from tests.api.test_cli import run_api, wait_healthy

    def statuses(trusted: list[str]) -> list[int]:
        config = tmp_path / f"trusted-{len(trusted)}.toml"
        config.write_text(
            f'[paths]\nlake = "{tmp_path / "lake"}"\nstate_dir = "{tmp_path / "state"}"\n\n'
            f'[api]\nmodel_url = "{model_server.url}"\napi_key_hashes = ["{"0" * 64}"]\nauth_max_failures = 3\n'
            f"trusted_proxies = {trusted!r}\n".replace("'", '"')
        )
        port = free_port()
        server = run_api("--port", str(port), config=config)
        try:
            url = wait_healthy(server, port)
            return [
                httpx.get(
                    f"{url}/predict/5008804",
                    headers={"Authorization": "Bearer smk_wrong", "X-Forwarded-For": f"203.0.113.{i}"},
                    timeout=10,
                ).status_code
                for i in range(1, 6)
            ]
        finally:
            server.terminate()
            server.communicate(timeout=30)

    assert statuses([]) == [401, 401, 401, 429, 429]
    assert statuses(["127.0.0.1"]) == [401] * 5  # the proxy's word taken: five addresses, one failure each
