"""The SageMaker hosting image has no mlflow: the model server serves and swaps the registry's production model from its files.

The registry keeps a one-line mirror of the production alias and a sha256-checked copy of
every version's model beside the store; the server must need nothing else. A package named
`mlflow` that fails to import stands first on the server's PYTHONPATH, as in that image.
"""

from __future__ import annotations

import time

import httpx

from tests.serving.conftest import registry_with, server_env, start_server


def test_the_server_starts_and_swaps_on_the_registrys_files_alone(tmp_path, model_a, model_b):
    registry = registry_with(tmp_path / "registry", model_a, model_b)
    registry.promote("2")
    registry.model_dir("1")  # both versions' local copies exist, as after training and evaluation
    blocker = tmp_path / "no-mlflow" / "mlflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("mlflow is not installed in this image")\n')
    env = server_env(tmp_path, registry_dir=tmp_path / "registry")
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    server = start_server(tmp_path, [], env)
    try:
        served = httpx.get(f"{server.url}/ping", timeout=5)
        assert served.status_code == 200
        first = httpx.post(
            f"{server.url}/invocations", content=b"1,1000,30,2,0\n", headers={"Content-Type": "text/csv"}
        )
        assert first.status_code == 200 and first.headers["X-Model-Version"] == "2", (first.headers, server.log())
        registry.promote("1")  # the store moves the alias; the server sees only the mirror file change
        deadline = time.monotonic() + 30
        version = None
        while time.monotonic() < deadline and version != "1":
            answer = httpx.post(
                f"{server.url}/invocations", content=b"1,1000,30,2,0\n", headers={"Content-Type": "text/csv"}
            )
            version = answer.headers.get("X-Model-Version")
            time.sleep(0.2)
        assert version == "1", server.log()
    finally:
        server.stop()
