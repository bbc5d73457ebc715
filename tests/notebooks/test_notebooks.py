"""The notebooks: committed without outputs, and each runs top to bottom with nbmake.

Each notebook runs in its own `pytest --nbmake` child process, with the venv's `python3`
kernel (jupyter_client starts a kernelspec whose command is `python` with the interpreter
that asks for it: the venv's). All four share one temporary workspace
(`SPARKMAKER_NOTEBOOKS__WORKDIR`), in file order, as a reader would run them: 02 builds the
snapshot 03 trains on, 03 leaves the production model 04 serves. Each also runs alone (it
builds what is missing), only slower. The notebooks' own cells assert their results
against independent computations (pandas by hand, scikit-learn, XGBoost's predict); the
checks here look at what each left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "01_explore_raw_data.ipynb",
    "02_features_and_hive.ipynb",
    "03_train_and_evaluate.ipynb",
    "04_api_and_sagemaker_runtime.ipynb",
]
CELL_TIMEOUT = 420  # seconds for one cell: the feature job's cell on a busy 2-core machine
SAMPLE_ROWS = 20_000


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    for index, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {index} of {path.name} was committed with outputs"
        assert cell.execution_count is None, f"code cell {index} of {path.name} was committed with an execution count"
    assert code[0].source.startswith("import workspace"), "the first code cell sets up the workspace"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("notebooks")
    yield root
    # A notebook killed by its timeout cannot stop the services it started: stop them
    # here, by the PIDs the workspace recorded for them, and only those.
    for record in (root / "state" / "pids").glob("*.json"):
        pid = json.loads(record.read_text())["pid"]
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def notebook_env(workdir: Path) -> dict[str, str]:
    # Hermetic like the rest of the suite: tests/conftest.py dropped every SPARKMAKER_* value
    # and pointed SPARKMAKER_CONFIG at the tracked configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKMAKER_") or k == "SPARKMAKER_CONFIG"}
    env.update(
        SPARK_LOCAL_IP="127.0.0.1",
        SPARKMAKER_NOTEBOOKS__WORKDIR=str(workdir),
        SPARKMAKER_NOTEBOOKS__SAMPLE_ROWS=str(SAMPLE_ROWS),
        MPLBACKEND="agg",
    )
    return env


def _sample_data(workdir: Path) -> None:
    (csv,) = (workdir / "data").glob("*.csv")
    with open(csv) as handle:
        rows = sum(1 for _ in handle) - 1
    assert rows >= SAMPLE_ROWS  # plus the planted duplicates
    assert csv.with_name(csv.name[:-4] + ".truth.parquet").is_file()


def _snapshot(workdir: Path) -> None:
    dataset = workdir / "lake" / "credit_risk"
    current = json.loads((dataset / "CURRENT.json").read_text())
    manifest = json.loads(Path(current["manifest"]).read_text())
    assert manifest["rows_in"] >= SAMPLE_ROWS
    assert (workdir / "metastore" / "metastore_db").is_dir(), "the notebook's own Derby metastore"
    assert (workdir / "lake" / "online" / "features.sqlite").is_file(), "the online store was materialized"


def _registry(workdir: Path) -> None:
    from training.mlflow_registry import MlflowRegistry

    registry = MlflowRegistry(workdir / "lake" / "registry")  # the workspace's registry_dir, its MLflow store inside
    assert len(registry.versions()) >= 2
    # The notebook promoted the challenger, then rolled back to the first candidate.
    promote, rollback = registry.history()[-2:]
    assert (promote["action"], rollback["action"]) == ("promote", "rollback")
    assert rollback["previous"] == promote["version"]
    assert registry.alias("production") == rollback["version"] == promote["previous"]


def _services_stopped(workdir: Path) -> None:
    assert not list((workdir / "state" / "pids").glob("*.json")), "the notebook stops what it started"
    assert (workdir / "state" / "predictions.sqlite").is_file(), "the API logged its predictions"
    for log in ("model-server", "api"):
        assert (workdir / "state" / "logs" / f"{log}.log").is_file()


AFTER: dict[str, Callable[[Path], None]] = {
    "01_explore_raw_data.ipynb": _sample_data,
    "02_features_and_hive.ipynb": _snapshot,
    "03_train_and_evaluate.ipynb": _registry,
    "04_api_and_sagemaker_runtime.ipynb": _services_stopped,
}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, workdir: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", f"--nbmake-timeout={CELL_TIMEOUT}", "--nbmake-kernel=python3",
         "-p", "no:cacheprovider", "-q", str(path.relative_to(REPO_ROOT))],
        cwd=REPO_ROOT, env=notebook_env(workdir), capture_output=True, text=True, timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{path.name} failed:\n{output[-6000:]}"
    AFTER[path.name](workdir)
