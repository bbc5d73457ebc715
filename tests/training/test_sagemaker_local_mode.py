"""The training image under the SageMaker SDK v3's own local mode (ModelTrainer, Mode.LOCAL_CONTAINER), unchanged.

The SDK mounts /opt/ml/model and /opt/ml/output root-owned 0755: the image must start as
root, hand them to its trainer and train. `python -m training sagemaker --local` runs it and
registers the model. Needs a container engine and docker-compose; skips, naming what is
missing, when none answers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from configuration.errors import UserError
from configuration.settings import REPO_ROOT
from tests.engine import engine_env_or_skip
from tests.training.test_container_image import image  # noqa: F401 (the built image, a module fixture)
from training import artifact

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_env():
    env = engine_env_or_skip("the training image under SageMaker local mode")
    if shutil.which("docker-compose") is None:
        pytest.skip("no docker-compose on PATH: SageMaker local mode runs the image with it")
    return env


@pytest.fixture
def on_engine(engine_env, monkeypatch):
    for name in ("DOCKER_HOST", "DOCKER_BUILDKIT"):
        if name in engine_env:
            monkeypatch.setenv(name, engine_env[name])
    for name in ("SAGEMAKER_USER_CONFIG_OVERRIDE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)  # run_local_mode sets them: undone after the test
    return engine_env


def test_the_sdk_runs_the_image_and_the_model_verifies(on_engine, image, tmp_path, synthetic, parts_writer):  # noqa: F811
    from training.sagemaker_local import run_local_mode

    table, _ = synthetic(rows=3000, seed=8)
    parts_writer(table, tmp_path / "train")
    result = run_local_mode(
        image, {"train": tmp_path / "train"}, {"num_round": "30", "max_depth": "3"}, tmp_path / "root"
    )
    assert result.metadata["hyperparameters"]["max_depth"] == 3
    unpacked = artifact.unpack(result.tar, tmp_path / "model")
    assert artifact.load_booster(tmp_path / "model").num_boosted_rounds() >= 1
    assert unpacked["threshold"] == result.metadata["threshold"]
    assert not (tmp_path / "root" / "artifacts" / "output" / "failure").exists()


def test_a_failing_job_reports_its_failure_file(on_engine, image, tmp_path, synthetic, parts_writer):  # noqa: F811
    from training.sagemaker_local import run_local_mode

    table, _ = synthetic(rows=500, seed=8)
    parts_writer(table.drop_columns(["flag_own_car"]), tmp_path / "train")
    with pytest.raises(UserError, match="the training job failed: channel 'train' lacks the column flag_own_car"):
        run_local_mode(image, {"train": tmp_path / "train"}, {}, tmp_path / "root")


def test_the_cli_trains_under_local_mode_and_registers(on_engine, image, tmp_path, synthetic, parts_writer):  # noqa: F811
    table, _ = synthetic(rows=2000, seed=3)
    parts_writer(table, tmp_path / "train")
    env = {
        **on_engine,
        "SPARKMAKER_PATHS__LAKE": str(tmp_path / "lake"),
        "SPARKMAKER_PATHS__STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "sagemaker",
            "--local",
            "--image-uri",
            image,
            "--train",
            str(tmp_path / "train"),
            "--hp",
            "num_round=20",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    models = subprocess.run(
        [sys.executable, "-m", "training", "models"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert models.returncode == 0 and "production" in models.stdout, models.stdout + models.stderr
