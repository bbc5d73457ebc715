"""A scratch stack for the tests of ./start.sh: its own folder, sample CSV, free ports and environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from configuration.network import free_port
from features.sample_data import generate, write


def scratch_stack(rows: int, seed: int) -> dict:
    """{"root", "csv", "ports", "env"}: a folder others can enter (the SQL server runs as an unprivileged
    user and reads the lake; pytest's own tmp folders are 0700), `rows` of sample loans, free ports."""
    root = Path(tempfile.mkdtemp(prefix="stack_"))
    os.chmod(root, 0o755)
    csv = root / "loans.csv"
    raw, truth = generate(rows, seed=seed, positive_rate=0.1)  # enough positives for the gate to judge the first model
    write(raw, truth, csv)
    ports = {name: free_port() for name in ("serving", "api", "metastore", "thrift", "mlflow", "airflow")}
    env = {
        **os.environ,
        "SPARKMAKER_PATHS__LAKE": str(root / "lake"),
        "SPARKMAKER_PATHS__STATE_DIR": str(root / "state"),
        "SPARKMAKER_SERVING__PORT": str(ports["serving"]),
        "SPARKMAKER_API__PORT": str(ports["api"]),
        "SPARKMAKER_STACK__METASTORE_PORT": str(ports["metastore"]),
        "SPARKMAKER_STACK__THRIFT_PORT": str(ports["thrift"]),
        "SPARKMAKER_MLFLOW__PORT": str(ports["mlflow"]),
        "SPARKMAKER_AIRFLOW__PORT": str(ports["airflow"]),
        "SPARKMAKER_AIRFLOW__LOG_SERVER_PORT": str(free_port()),
        "SPARKMAKER_AIRFLOW__SCHEDULE": "none",  # Airflow runs, but no lifecycle run starts under the test
    }
    return {"root": root, "csv": csv, "ports": ports, "env": env}
