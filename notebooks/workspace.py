"""Plumbing shared by the notebooks: their own workspace, sample data, snapshot, model and services.

Every notebook starts with

    import workspace
    settings = workspace.settings()

and then works only inside `settings.notebooks.workdir` (default `<state_dir>/notebooks`):
its own sample CSV, lake, embedded Hive metastore, model registry, online store, logs.
The notebooks therefore never repoint the platform's Hive tables, never fight the local
stack for its Derby metastore (which admits one JVM at a time), and can be run by the
test suite in a temporary folder (`SPARKMAKER_NOTEBOOKS__WORKDIR=/tmp/...`).

Each notebook runs top to bottom on its own: what an earlier notebook would have built
(the sample data, a feature snapshot, a production model) is built here when missing
(`ensure_*`), and reused when present.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the notebooks import the platform's packages from the repository
    sys.path.insert(0, str(REPO_ROOT))

from configuration.errors import UserError  # noqa: E402
from configuration.network import free_port  # noqa: E402
from configuration.settings import Settings, load_settings  # noqa: E402

# The sample data's loans end in 2021-09; its extraction day is the natural "today" for
# the latest features (the job's default, the real today, would age every customer).
from features.sample_data import EXTRACTION_DATE  # noqa: E402

AS_OF = dt.date.fromisoformat(str(EXTRACTION_DATE))
NOTEBOOK_DATABASE = "credit_risk_notebooks"


def workdir(base: Settings) -> Path:
    return Path(base.notebooks.workdir or Path(base.paths.state_dir) / "notebooks")


def settings() -> Settings:
    """The platform's settings, pointed at the notebooks' workspace.

    With the embedded metastore (the default) the workspace gets a Derby database of its
    own. When a metastore service is configured (metastore.kind = thrift or jdbc, as in the
    compose cluster) it is shared, so the notebooks' tables go to a database of their own.
    """
    base = load_settings()
    root = workdir(base)
    metastore: dict = {"derby_dir": str(root / "metastore")} if base.metastore.kind == "embedded" else {}
    return load_settings(
        paths={"lake": str(root / "lake"), "state_dir": str(root / "state")},
        spark={"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        metastore=metastore,
        features={"database": base.features.database if base.metastore.kind == "embedded" else NOTEBOOK_DATABASE},
        online_store={"kind": "sqlite", "sqlite_path": str(root / "lake" / "online" / "features.sqlite")},
        training={"registry_dir": str(root / "lake" / "registry")},
        api={"prediction_log": "sqlite", "prediction_log_sqlite": str(root / "state" / "predictions.sqlite")},
    )


def env(s: Settings) -> dict[str, str]:
    """Environment of a child process (`python -m features|training|serving|api`) that sees the same workspace:
    the workspace's settings as a file (pipeline.child), not a hand-kept list of variables."""
    from pipeline.child import environ_for, write_settings

    return environ_for(write_settings(s, Path(s.paths.state_dir) / "workspace-settings.toml"))


def logs_dir(s: Settings) -> Path:
    path = Path(s.paths.state_dir) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_module(s: Settings, *args: str, log_name: str | None = None) -> str:
    """Run `python -m <args>` in the workspace; return its output; a failure raises with the output's last lines."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env(s), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if log_name:
        (logs_dir(s) / f"{log_name}.log").write_text(output)
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-5:])
        raise UserError(f"python -m {' '.join(args)} failed with exit code {proc.returncode}:\n{tail}")
    return proc.stdout


# --- what an earlier notebook would have built ---------------------------------------------

def sample_csv(s: Settings) -> Path:
    nb = s.notebooks
    return workdir(s) / "data" / f"loans-{nb.sample_rows}-seed{nb.seed}.csv"


def ensure_sample_data(s: Settings) -> Path:
    """The workspace's generated CSV (and its `.truth.parquet`), written on first use."""
    from features import sample_data

    csv = sample_csv(s)
    if not csv.exists() or not sample_data.truth_path(csv).exists():
        raw, truth = sample_data.generate(s.notebooks.sample_rows, s.notebooks.seed, s.notebooks.dirty_share)
        sample_data.write(raw, truth, csv)
    return csv


def truth_path(s: Settings) -> Path:
    from features import sample_data

    return sample_data.truth_path(sample_csv(s))


def current_manifest(s: Settings) -> dict | None:
    from features import lake

    return lake.read_manifest(s) if lake.read_current(s) else None


def lifecycle(s: Settings, *names: str) -> None:
    """Steps of the pipeline (pipeline.lifecycle) on the workspace's sample data, as of its extraction day.

    The pipeline decides, as everywhere else: the feature job runs unless the current snapshot
    came from the same file and as_of; a challenger is trained when there is reason to and
    promoted when the gate says so. The job itself runs as `python -m features`, not in this
    kernel: its JVM holds the embedded metastore only while it runs.
    """
    from pipeline import lifecycle as steps
    from pipeline.record import RunRecord

    record = RunRecord.open(s, "notebooks")
    params = steps.Params(input=str(ensure_sample_data(s)), as_of=AS_OF)
    for name in names:
        steps.run_step(s, record, name, params, say=lambda line: None)


def ensure_snapshot(s: Settings) -> dict:
    """The current feature snapshot of the workspace (the pipeline's ingest and features steps)."""
    if current_manifest(s) is None:
        lifecycle(s, "ingest", "features")
    return current_manifest(s)


def ensure_online_store(s: Settings) -> None:
    """The current snapshot in the online store (the pipeline's materialize step)."""
    lifecycle(s, "ingest", "features", "materialize")


def ensure_production_model(s: Settings) -> str:
    """The production model version of the workspace's registry; the pipeline trains and gates one when there is none."""
    from pipeline.record import RunRecord
    from training.registry import open_registry

    registry = open_registry(s)
    if registry.alias() is None:
        lifecycle(s, "ingest", "features", "drift", "train", "evaluate", "promote")
    if registry.alias() is None:
        reason = (RunRecord.open(s, "notebooks").output("evaluate") or {}).get("reason", "no decision recorded")
        raise UserError(f"no production model in the workspace: the gate {reason}")
    return registry.alias()


# --- services started by a notebook ---------------------------------------------------------

@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen
    log: Path
    record: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (the service and anything it forked)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.record.unlink(missing_ok=True)


def start_service(s: Settings, name: str, args: list[str], health_url: str, extra_env: dict[str, str] | None = None,
                  timeout: float = 90.0) -> Service:
    """Start `python -m <args>` in its own process group, wait until `health_url` answers 200.

    The PID goes to `<state_dir>/pids/<name>.json` (what the test suite checks is gone after a
    run); the service is also stopped when the kernel exits, in case the notebook stops early.
    """
    import httpx

    pids = Path(s.paths.state_dir) / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    log = logs_dir(s) / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT, env={**env(s), **(extra_env or {})},
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    record = pids / f"{name}.json"
    record.write_text(json.dumps({"pid": process.pid, "command": args, "url": health_url}))
    service = Service(name, health_url.rsplit("/", 1)[0], process, log, record)
    atexit.register(service.stop)
    from stack.supervisor import wait_healthy

    def healthy() -> bool:
        try:
            return httpx.get(health_url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_healthy(process, healthy, timeout, name, log)
    except UserError:
        service.stop()
        raise
    return service
