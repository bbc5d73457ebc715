"""Helpers of the docker-compose tests: the compose file parsed, and container.py loaded as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CONTAINER_SCRIPT = REPO_ROOT / "compose" / "roles.py"
PUBLISHED = {"api", "jupyter", "spark-master", "thrift-server", "mlflow", "airflow"}
ONE_SHOTS = {"features", "training", "publish"}


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def container_module():
    """compose/roles.py (the image's sparkmaker-container), imported from the checkout."""
    spec = importlib.util.spec_from_file_location("sparkmaker_container", CONTAINER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
