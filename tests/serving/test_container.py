"""The serving image: built from serving/Dockerfile and run as SageMaker runs it (`docker run IMAGE serve`).

Needs a container engine (Docker, or podman's Docker API: shared/containers/engine-up.sh);
skips, naming what is missing, when none answers.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import httpx
import numpy as np
import pytest

from tests.serving.conftest import REPO_ROOT, free_port, reference_predict, synthetic_features
from tests.images import uncopied_imports
from tests.pins import pins
from tests.engine import engine_env_or_skip


def test_image_requirements_are_pinned_as_in_the_repository():
    image = pins(REPO_ROOT / "serving" / "requirements.txt")
    root = pins(REPO_ROOT / "requirements.txt")
    assert image, "serving/requirements.txt pins nothing"
    for name, version in image.items():
        assert root.get(name) == version, (
            f"{name}=={version} in serving/requirements.txt, {root.get(name)} in requirements.txt"
        )


@pytest.fixture(scope="module")
def engine_env():
    return engine_env_or_skip("the serving image")


@pytest.fixture(scope="module")
def image(engine_env):
    tag = "sparkmaker-serving:test"
    built = subprocess.run(
        ["docker", "build", "-f", "serving/Dockerfile", "-t", tag, "."],
        cwd=REPO_ROOT,
        env=engine_env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return tag


@pytest.mark.slow
def test_image_serves_the_model_as_sagemaker_runs_it(engine_env, image, model_a, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_a, model)
    for path in [model, *model.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's non-root user
    port = free_port()
    name = f"sparkmaker-serving-test-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:8080",
            "-v",
            f"{model}:/opt/ml/model:ro",
            "-e",
            "SPARKMAKER_SERVING__MODEL_VERSION=5",
            image,
            "serve",
        ],
        env=engine_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, subprocess.run(
                ["docker", "logs", name], env=engine_env, capture_output=True, text=True
            ).stderr
            time.sleep(0.5)
        matrix = synthetic_features(20, seed=61)
        body = "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in matrix)
        answer = httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200 and answer.headers["x-model-version"] == "5"
        np.testing.assert_allclose(
            [float(v) for v in answer.text.split()], reference_predict(model_a, matrix), atol=1e-6
        )
        # The tree walk in C, built in the image's build stage, loads for the server's user without a compiler.
        walk = subprocess.run(
            [
                "docker",
                "exec",
                name,
                "python",
                "-c",
                "from serving import native; print(native.ensemble() is not None)",
            ],
            env=engine_env,
            capture_output=True,
            text=True,
        )
        assert walk.stdout.strip() == "True", walk.stderr
        user = subprocess.run(["docker", "exec", name, "id", "-u"], env=engine_env, capture_output=True, text=True)
        assert user.stdout.strip() not in ("", "0"), "the server must not run as root"
        stopped = subprocess.run(
            ["docker", "stop", "-t", "10", name], env=engine_env, capture_output=True, text=True, timeout=60
        )
        assert stopped.returncode == 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=engine_env, capture_output=True, timeout=60)


def test_the_image_holds_every_first_party_module_the_server_imports():
    """What `serve` runs (the server, its app, its HTTP protocol and logs), walked statically: every
    repository module it imports is copied by the Dockerfile. Batch scoring is not run in the image."""
    serving = REPO_ROOT / "serving"
    roots = [serving / name for name in ("server.py", "app.py", "fast_http.py", "logs.py")]
    missing = uncopied_imports(serving / "Dockerfile", roots, {"serving", "configuration", "features", "training"})
    assert not missing, f"imported by the model server but not copied into the image: {missing}"
