"""The training image: built from training/Dockerfile and run as SageMaker runs it (`docker run IMAGE train`).

Needs a container engine (Docker, or podman's Docker API: shared/containers/engine-up.sh);
skips, naming what is missing, when none answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from training import artifact
from tests.pins import pins
from tests.engine import engine_env_or_skip

REPO = Path(__file__).resolve().parents[2]


def test_image_requirements_are_pinned_as_in_the_repository():
    image = pins(REPO / "training" / "requirements.txt")
    root = pins(REPO / "requirements.txt")
    assert {"xgboost-cpu", "pyarrow", "numpy", "matplotlib", "pydantic"} <= set(image)
    for name, version in image.items():
        assert root.get(name) == version, (
            f"{name}=={version} in training/requirements.txt, {root.get(name)} in requirements.txt"
        )


def test_every_file_the_dockerfile_copies_is_let_through_the_ignore_file():
    allowed = [
        line[1:]
        for line in (REPO / "training" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copied = []
    for line in (REPO / "training" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    for source in copied:
        assert source in allowed, (
            f"training/Dockerfile copies {source}, which training/Dockerfile.dockerignore leaves out"
        )


@pytest.fixture(scope="module")
def engine_env():
    return engine_env_or_skip("the training image")


@pytest.fixture(scope="module")
def image(engine_env):
    tag = "sparkmaker-training:test"
    built = subprocess.run(
        [str(REPO / "training" / "build-image.sh"), tag], env=engine_env, capture_output=True, text=True, timeout=1200
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return tag


def _tree(tmp_path: Path, table, parts_writer, hyperparameters: dict) -> Path:
    root = tmp_path / "ml"
    for folder in ("input/config", "input/data", "model", "output"):
        (root / folder).mkdir(parents=True)
    parts_writer(table, root / "input" / "data" / "train" / "nested")
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the image trains as a non-root user
    return root


def _run(engine_env, image, root: Path, *command: str) -> subprocess.CompletedProcess:
    # No --rm: podman's Docker API drops the container's exit status with it (seen: 0 for exit 3).
    name = f"sparkmaker-training-test-{uuid.uuid4().hex[:8]}"
    try:
        return subprocess.run(
            ["docker", "run", "--name", name, "-v", f"{root}:/opt/ml", image, *command],
            env=engine_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=engine_env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_image_trains_as_sagemaker_runs_it(engine_env, image, tmp_path, synthetic, parts_writer):
    table, _ = synthetic(rows=3000, seed=9)
    root = _tree(tmp_path, table, parts_writer, {"num_round": "40", "max_depth": "3"})
    result = _run(engine_env, image, root, "train")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metadata = artifact.verify_model_dir(root / "model")
    assert metadata["hyperparameters"]["max_depth"] == 3
    assert metadata["code_version"] != ""
    assert sorted(p.name for p in (root / "model").iterdir()) == sorted(artifact.ARTIFACT_FILES)
    assert (root / "output" / "data" / "evaluation.json").is_file()
    assert not (root / "output" / "failure").exists()
    assert artifact.load_booster(root / "model").num_boosted_rounds() >= 1
    # The image starts as root (as SageMaker runs it) and trains as trainer (uid 10001): what it wrote is trainer's.
    assert {p.stat().st_uid for p in (root / "model").iterdir()} == {10001}
    assert (root / "output" / "data" / "evaluation.json").stat().st_uid == 10001


def _sdk_tree(tmp_path: Path, table, parts_writer, hyperparameters: dict) -> Path:
    """/opt/ml as the SDK's local mode mounts it: model and output root-owned 0755, no output/data."""
    root = _tree(tmp_path, table, parts_writer, hyperparameters)
    for folder in (root / "model", root / "output"):
        folder.chmod(0o755)
        os.chown(folder, 0, 0)
    return root


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned mounts need root to make")
def test_image_trains_on_root_owned_0755_mounts_as_local_mode_makes_them(
    engine_env, image, tmp_path, synthetic, parts_writer
):
    table, _ = synthetic(rows=2000, seed=4)
    root = _sdk_tree(tmp_path, table, parts_writer, {"num_round": "20", "max_depth": "3"})
    result = _run(engine_env, image, root, "train")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    artifact.verify_model_dir(root / "model")
    assert (root / "output" / "data" / "evaluation.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned mounts need root to make")
def test_a_failure_on_root_owned_mounts_is_still_written(engine_env, image, tmp_path, synthetic, parts_writer):
    table, _ = synthetic(rows=500, seed=4)
    root = _sdk_tree(tmp_path, table.drop_columns(["age"]), parts_writer, {})
    result = _run(engine_env, image, root, "train")
    assert result.returncode == 2
    assert "lacks the column age" in (root / "output" / "failure").read_text()


@pytest.mark.slow
def test_image_reports_a_failure_as_sagemaker_reads_it(engine_env, image, tmp_path, synthetic, parts_writer):
    table, _ = synthetic(rows=500, seed=9)
    root = _tree(tmp_path, table.drop_columns(["flag_own_car"]), parts_writer, {})
    result = _run(engine_env, image, root, "train")
    assert result.returncode == 2
    assert (root / "output" / "failure").read_text().strip() == (
        "channel 'train' lacks the column flag_own_car: it must hold the feature job's training table"
    )
    assert "Traceback" not in result.stderr
