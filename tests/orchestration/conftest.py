"""Airflow for the orchestration tests: its own venv, a temp AIRFLOW_HOME migrated once, and a way to run
the Airflow half of a test (airflow_side.py) in that venv with a given project configuration."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from configuration.errors import UserError
from configuration.settings import Settings
from orchestration import runtime

AIRFLOW_SIDE = Path(__file__).with_name("airflow_side.py")

# Stands in front of the project's python as the DAG's airflow.project_python: logs each call
# (one JSON line per call), fails the first call of $FAIL_ONCE_STEP with exit 1 (a transient
# failure, for Airflow's retry), answers $EXIT2_STEP with exit 2 (a missing predecessor), says
# "<step> is running" and takes $SLOW_SECONDS on $SLOW_STEP (a task to watch while it runs), and
# otherwise runs $REAL_PYTHON, or exits 0 when none is given (the DAG's wiring alone).
WRAPPER = r"""#!/usr/bin/env bash
set -u
step="${4:-}"
python3 -c 'import json, os, sys; print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid()}))' "$@" >> "$CALLS_LOG"
if [ "$step" = "${FAIL_ONCE_STEP:-}" ] && [ ! -e "$CALLS_LOG.failed-$step" ]; then
  touch "$CALLS_LOG.failed-$step"
  echo "error: injected transient failure of $step" >&2
  exit 1
fi
if [ "$step" = "${EXIT2_STEP:-}" ]; then
  echo "error: step $step: a predecessor has no output" >&2
  exit 2
fi
if [ "$step" = "${SLOW_STEP:-}" ]; then
  echo "$step is running"
  sleep "${SLOW_SECONDS:-30}"
fi
if [ -n "${REAL_PYTHON:-}" ]; then
  exec "$REAL_PYTHON" "$@"
fi
exit 0
"""


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    try:
        runtime.ensure_venv()
    except UserError as exc:
        pytest.skip(f"the Airflow venv cannot be installed ({exc}): run scripts/ensure_airflow_venv.sh")
    return runtime.AIRFLOW_BIN / "python"


@pytest.fixture(scope="session")
def airflow_home(airflow_venv, tmp_path_factory) -> Path:
    """A temp AIRFLOW_HOME with a migrated SQLite database (dag.test() needs one; ~4 s)."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, **runtime.airflow_environment(Settings(), home)}
    result = subprocess.run(
        [str(runtime.AIRFLOW_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return home


class AirflowSide:
    """Runs airflow_side.py in the Airflow venv with the environment the stack would give Airflow."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home = home
        self.calls_log = tmp_path / "calls.jsonl"
        self.wrapper = tmp_path / "project-python"
        self.wrapper.write_text(WRAPPER)
        self.wrapper.chmod(0o755)

    def env(self, settings: Settings, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **runtime.airflow_environment(settings, self.home),
            "CALLS_LOG": str(self.calls_log),
            **extra,
        }

    def run(self, settings: Settings, *args: str, timeout: float = 600, **extra: str) -> dict:
        result = subprocess.run(
            [str(runtime.AIRFLOW_BIN / "python"), str(AIRFLOW_SIDE), *args],
            env=self.env(settings, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        self.output = result.stdout + result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def calls(self) -> list[dict]:
        if not self.calls_log.exists():
            return []
        return [json.loads(line) for line in self.calls_log.read_text().splitlines()]


@pytest.fixture
def airflow_side(airflow_home, tmp_path) -> AirflowSide:
    return AirflowSide(airflow_home, tmp_path)
