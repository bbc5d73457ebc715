"""How the project runs Airflow: its venv, its home, its environment and its login.

Runs in the project's venv (the local stack and the tests call it); the DAG itself
(`orchestration/dags/credit_risk_lifecycle.py`) runs in Airflow's venv and reads only the
environment built here.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError
from configuration.network import check_port
from configuration.settings import REPO_ROOT, Settings

AIRFLOW_VENV = REPO_ROOT / ".venv-airflow"
AIRFLOW_BIN = AIRFLOW_VENV / "bin"
DAGS_FOLDER = REPO_ROOT / "orchestration" / "dags"
AIRFLOW_PATH = REPO_ROOT / "orchestration" / "airflow_path"  # modules Airflow's own processes import
ENSURE_VENV = REPO_ROOT / "scripts" / "ensure_airflow_venv.sh"
DAG_ID = "credit_risk_lifecycle"
USER = "admin"


def ensure_venv() -> None:
    """Install .venv-airflow when it is missing or stale (scripts/ensure_airflow_venv.sh; a no-op when current)."""
    result = subprocess.run([str(ENSURE_VENV)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = [
            line for line in result.stderr.splitlines() if line.startswith("sparkmaker:")
        ] or result.stderr.splitlines()
        raise UserError(
            (lines[-1] if lines else f"{ENSURE_VENV} failed") + f" (rerun {ENSURE_VENV} to see pip's output)"
        )


def airflow_home(settings: Settings) -> Path:
    return Path(settings.airflow.home or Path(settings.paths.state_dir) / "airflow")


def input_uri(settings: Settings) -> str:
    """The CSV each DAG run ingests: airflow.input_uri, else the local stack's own input file."""
    return settings.airflow.input_uri or str(Path(settings.paths.state_dir) / "data" / "dataset_credit_risk.csv")


def project_python(settings: Settings) -> str:
    """airflow.project_python, else the project's venv, else (an image without one, such as the compose
    cluster's) the Python running this: `orchestration serve` runs on the project's own interpreter."""
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return settings.airflow.project_python or (str(venv) if venv.exists() else sys.executable)


def dag_environment(settings: Settings) -> dict[str, str]:
    """The AirflowSettings the DAG file reads, under the project's own variable names."""
    a = settings.airflow
    return {
        "SPARKMAKER_AIRFLOW__SCHEDULE": a.schedule,
        "SPARKMAKER_AIRFLOW__INPUT_URI": input_uri(settings),
        "SPARKMAKER_AIRFLOW__PROJECT_PYTHON": project_python(settings),
        "SPARKMAKER_AIRFLOW__RETRIES": str(a.retries),
        "SPARKMAKER_AIRFLOW__RETRY_DELAY_SECONDS": str(a.retry_delay_seconds),
        "SPARKMAKER_AIRFLOW__MAX_RETRY_DELAY_SECONDS": str(a.max_retry_delay_seconds),
        "SPARKMAKER_AIRFLOW__BATCH_SCORE": str(a.batch_score).lower(),
    }


def airflow_environment(settings: Settings, home: Path) -> dict[str, str]:
    """Airflow's own configuration (AIRFLOW__*) for the local stack, the compose cluster or a test, plus the DAG's settings.

    Metadata database airflow.database_url, else SQLite under `home`; API server on
    airflow.host:airflow.port; few parallel tasks (2 cores); one lifecycle run at a time.
    """
    a = settings.airflow
    database_url = a.database_url.get_secret_value()
    return {
        "AIRFLOW_HOME": str(home),
        # The tasks' and components' own `airflow` subprocesses are found on PATH.
        "PATH": f"{AIRFLOW_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(a.parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(a.parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "1",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url or f"sqlite:///{home / 'airflow.db'}",
        # A running task's log, fetched by the UI from 127.0.0.1:<log_server_port> (orchestration/components.py).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "sparkmaker_airflow_host.loopback",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(AIRFLOW_PATH), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(a.log_server_port),
        "AIRFLOW__API__HOST": a.host,
        "AIRFLOW__API__PORT": str(a.port),
        "AIRFLOW__API__WORKERS": "1",
        # Where the workers reach the API server's execution API (same machine or container).
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{a.port}",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        **dag_environment(settings),
        # Airflow opens an async engine too, by default with asyncpg for PostgreSQL; psycopg 3 is both.
        **(
            {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database_url}
            if database_url.startswith("postgresql+psycopg://")
            else {}
        ),
    }


def passwords_file(home: Path) -> Path:
    return home / "passwords.json"


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    path: Path


def ensure_login(home: Path) -> Login:
    """The UI's login: a password generated once, kept 0600 in <home>/passwords.json (Airflow's simple auth manager reads it)."""
    path = passwords_file(home)
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({USER: secrets.token_urlsafe(18)}) + "\n")
    try:
        password = json.loads(path.read_text())[USER]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} does not hold the Airflow password of {USER!r}: delete it and start again") from None
    return Login(USER, password, path)


def serve(settings: Settings) -> None:
    """Run Airflow's scheduler, DAG processor, triggerer, API server and task log server (orchestration/components.py)
    with the environment above and the login ensured, until SIGTERM: `python -m orchestration serve`."""
    from orchestration import components

    # A taken port is one line here, not a component's traceback and the others stopped.
    check_port(settings.airflow.host, settings.airflow.port, "airflow.port")
    check_port("127.0.0.1", settings.airflow.log_server_port, "airflow.log_server_port")
    home = airflow_home(settings)
    ensure_venv()
    login = ensure_login(home)
    airflow = str(AIRFLOW_BIN / "airflow")
    env = {**os.environ, **airflow_environment(settings, home)}
    components.migrate(airflow, env)
    print(
        f"Airflow: http://{settings.airflow.host}:{settings.airflow.port} (user {login.user}, password in {login.path})",
        flush=True,
    )
    components.supervise(components.airflow_components(AIRFLOW_BIN, settings.airflow.log_server_port), env)


def healthy(port: int) -> bool:
    """The API server answers and reports its metadata database and scheduler healthy."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return all((body.get(part) or {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))


def airflow_cli(settings: Settings, args: list[str]) -> None:
    """Become the airflow CLI with the home and configuration `serve` uses (dags trigger, backfill create, ...)."""
    ensure_venv()
    airflow = str(AIRFLOW_BIN / "airflow")
    os.execve(airflow, [airflow, *args], {**os.environ, **airflow_environment(settings, airflow_home(settings))})
