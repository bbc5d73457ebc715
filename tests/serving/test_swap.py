"""Zero-downtime swaps under continuous load: on promotion, on the admin call, across workers, and refusals.

Every answer must be a 200 whose value is the prediction of the model its version header
names (computed independently with XGBoost), and each client must see the versions change
only in the order the swaps happened.
"""

from __future__ import annotations

import threading
import time
from itertools import groupby

import httpx
import numpy as np
import pytest

from tests.serving.conftest import (
    ADMIN_TOKEN,
    reference_predict,
    registry_with,
    server_env,
    start_server,
    synthetic_features,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Load:
    """Client threads posting one CSV row without pause, each on its own keep-alive connection."""

    def __init__(self, url: str, body: bytes, clients: int = 2) -> None:
        self.url = url
        self.body = body
        self.stop_event = threading.Event()
        self.records: list[list[tuple[str, float]]] = [[] for _ in range(clients)]
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop_event.is_set():
                try:
                    answer = client.post("/invocations", content=self.body, headers={"Content-Type": "text/csv"})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    self.errors.append(f"{answer.status_code} {answer.text}")
                    continue
                self.records[index].append((answer.headers["x-model-version"], float(answer.text)))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def latest(self) -> set[str]:
        return {records[-1][0] for records in self.records if records}

    def wait_for(self, version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # every client must have answered: one that has not yet could first see a later version
            if all(self.records) and self.latest() == {version}:
                return
            time.sleep(0.05)
        raise AssertionError(f"clients still see {self.latest()} after {timeout} s, expected {version}")


def _row_body(row: np.ndarray) -> bytes:
    return (",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n").encode()


@pytest.fixture
def fixed_row(model_a, model_b):
    row = synthetic_features(50, seed=31)
    expected_a, expected_b = reference_predict(model_a, row), reference_predict(model_b, row)
    pick = int(np.argmax(np.abs(expected_a - expected_b)))  # a row the two models disagree on
    assert abs(expected_a[pick] - expected_b[pick]) > 1e-3
    return row[pick : pick + 1], float(expected_a[pick]), float(expected_b[pick])


def _corrupt_registry_version(registry, version: str) -> None:
    model_file = registry.root / "models" / version / "model" / "xgboost-model"
    model_file.write_bytes(model_file.read_bytes().replace(b'"base_score"', b'"base_score" ', 1))


def _check(load: Load, expected: dict[str, float], order: list[str]) -> int:
    assert load.errors == [], load.errors[:5]
    total = 0
    for records in load.records:
        total += len(records)
        for version, value in records:
            assert value == pytest.approx(expected[version], abs=1e-6), f"version {version} answered {value}"
        assert [version for version, _ in groupby(v for v, _ in records)] == order
    return total


def test_swaps_under_load_on_promotion_refusal_and_admin_call(tmp_path, model_a, model_b, fixed_row):
    row, p_a, p_b = fixed_row
    registry = registry_with(tmp_path / "registry", model_a, model_b, model_a)  # versions 1, 2, 3
    _corrupt_registry_version(registry, "3")
    server = start_server(tmp_path, [], server_env(tmp_path, registry_dir=tmp_path / "registry"), wait_ready=False)
    try:
        # Started before any promotion: not ready, and it says so.
        assert httpx.get(f"{server.url}/ping").status_code == 503
        assert httpx.post(f"{server.url}/invocations", content=_row_body(row[0])).status_code == 503
        registry.promote("1")
        deadline = time.monotonic() + 15
        while httpx.get(f"{server.url}/ping").status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)

        with Load(server.url, _row_body(row[0])) as load:
            load.wait_for("1")
            registry.promote("2")  # the production alias changes: the server follows
            load.wait_for("2")
            time.sleep(0.3)
            registry.promote("3")  # a corrupt model: refused, version 2 keeps serving
            time.sleep(1.0)
            assert load.latest() == {"2"}
            refused = httpx.get(f"{server.url}/admin/model", headers=AUTH).json()
            assert refused["model"]["version"] == "2"
            assert "sha256" in refused["last_refusal"]
            answer = httpx.post(f"{server.url}/admin/model", json={"version": "1"}, headers=AUTH, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == "1" and answer.json()["previous"] == "2"
            load.wait_for("1")
            time.sleep(0.3)
        total = _check(load, {"1": p_a, "2": p_b}, ["1", "2", "1"])
        assert total > 50
    finally:
        server.stop()
    assert "refused registry version 3" in server.log()
    assert "Traceback" not in server.log()


def test_admin_swap_reaches_every_worker(tmp_path, model_a, model_b, fixed_row):
    row, p_a, p_b = fixed_row
    registry = registry_with(tmp_path / "registry", model_a, model_b, model_a)  # versions 1, 2, 3
    registry.promote("1")
    server = start_server(tmp_path, ["--workers", "2"], server_env(tmp_path, registry_dir=tmp_path / "registry"))
    body = _row_body(row[0])

    def fresh_versions(count: int) -> set[str]:
        # New connections, so the kernel spreads them over both workers.
        seen = set()
        for _ in range(count):
            answer = httpx.post(f"{server.url}/invocations", content=body, headers={"Connection": "close"})
            assert answer.status_code == 200, answer.text
            seen.add(answer.headers["x-model-version"])
        return seen

    def converge(version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while fresh_versions(40) != {version}:
            assert time.monotonic() < deadline, f"workers did not all reach version {version}:\n{server.log()}"

    try:
        # The kernel spreads new connections over the workers; under load it can take a while to see both.
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(httpx.get(f"{server.url}/admin/model", headers=AUTH | {"Connection": "close"}).json()["pid"])
        assert len(pids) == 2, "both workers should take connections"
        with Load(server.url, body, clients=2) as load:
            load.wait_for("1")  # every client has answered before the swap starts
            answer = httpx.post(f"{server.url}/admin/model", json={"version": "2"}, headers=AUTH, timeout=30)
            assert answer.status_code == 200, answer.text
            converge("2")
            load.wait_for("2")
            # A promotion after the admin pin changes the production alias: it wins again, in every worker.
            registry.promote("3")
            converge("3")
            load.wait_for("3")
        _check(load, {"1": p_a, "2": p_b, "3": p_a}, ["1", "2", "3"])
    finally:
        server.stop()


def test_admin_refusals_leave_the_old_model_serving(tmp_path, model_a, dir_server):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "xgboost-model").write_bytes((model_a / "xgboost-model").read_bytes()[:-10])
    (broken / "model-metadata.json").write_bytes((model_a / "model-metadata.json").read_bytes())
    url = dir_server.url
    cases = [
        ({"model_dir": str(broken)}, 409, "sha256"),
        ({"model_dir": str(tmp_path / "absent")}, 409, "does not exist"),
        ({"version": "2"}, 409, "no model registry"),
        ({"model_dir": "relative/path"}, 400, "absolute path"),
        ({"version": "1", "model_dir": "/x"}, 400, "exactly one"),
    ]
    for body, status, fragment in cases:
        answer = httpx.post(f"{url}/admin/model", json=body, headers=AUTH, timeout=30)
        assert answer.status_code == status, answer.text
        assert fragment in answer.json()["error"]
    assert httpx.post(f"{url}/admin/model", content=b"{nope", headers=AUTH).status_code == 400
    assert httpx.post(f"{url}/admin/model", json={"version": "1"}).status_code == 401
    served = httpx.post(f"{url}/invocations", content=b"1,2000,40,3,1")
    assert served.status_code == 200 and served.headers["x-model-version"] == "7"


def test_admin_routes_are_off_without_a_token(tmp_path, model_a):
    server = start_server(tmp_path, ["--model-dir", str(model_a)], server_env(tmp_path, admin_token=""))
    try:
        answer = httpx.post(
            f"{server.url}/admin/model", json={"version": "1"}, headers={"Authorization": "Bearer anything"}
        )
        assert answer.status_code == 403
        assert "serving.admin_token" in answer.json()["error"]
    finally:
        server.stop()
