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
    """Environment of a child process (`python -m features|training|serving|api`) that sees the same workspace."""
    values = {
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "SPARKMAKER_PATHS__LAKE": s.paths.lake,
        "SPARKMAKER_PATHS__STATE_DIR": s.paths.state_dir,
        "SPARKMAKER_SPARK__MASTER": s.spark.master,
        "SPARKMAKER_SPARK__SHUFFLE_PARTITIONS": str(s.spark.shuffle_partitions),
        "SPARKMAKER_SPARK__DRIVER_MEMORY": s.spark.driver_memory,
        "SPARKMAKER_METASTORE__KIND": s.metastore.kind,
        "SPARKMAKER_FEATURES__DATABASE": s.features.database,
        "SPARKMAKER_ONLINE_STORE__KIND": s.online_store.kind,
        "SPARKMAKER_ONLINE_STORE__SQLITE_PATH": str(s.online_sqlite_path()),
        "SPARKMAKER_TRAINING__REGISTRY_DIR": str(s.registry_dir()),
        "SPARKMAKER_API__PREDICTION_LOG": s.api.prediction_log,
        "SPARKMAKER_API__PREDICTION_LOG_SQLITE": str(s.api.prediction_log_sqlite),
    }
    if s.metastore.derby_dir:
        values["SPARKMAKER_METASTORE__DERBY_DIR"] = s.metastore.derby_dir
    return {**os.environ, **values}


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


def ensure_snapshot(s: Settings) -> dict:
    """The current feature snapshot of the workspace; runs the feature job (a child process) when there is none.

    The job runs as `python -m features`, not in this kernel: its JVM holds the embedded
    metastore only while it runs, and it materializes the online store as its last step.
    """
    manifest = current_manifest(s)
    if manifest is None:
        csv = ensure_sample_data(s)
        run_module(s, "features", "--input", str(csv), "--as-of", AS_OF.isoformat(), log_name="features")
        manifest = current_manifest(s)
    return manifest


def ensure_online_store(s: Settings) -> None:
    """Load the current snapshot into the online store unless it is there already."""
    from features.online import open_store
    from features.online.materialize import materialize

    manifest = ensure_snapshot(s)
    store = open_store(s)
    try:
        current = store.current_snapshot()
    finally:
        store.close()
    if current is None or current.run_id != manifest["run_id"]:
        materialize(s, manifest["run_id"])


def ensure_production_model(s: Settings) -> str:
    """The production model version of the workspace's registry; trains one with the defaults when there is none."""
    from training import local
    from training.registry import open_registry

    registry = open_registry(s)
    if registry.alias() is None:
        manifest = ensure_snapshot(s)
        source = local.Source(uri=manifest["outputs"]["training"]["uri"], run_id=manifest["run_id"])
        truth = truth_path(s)
        local.train_local(s, registry, source, None, str(truth) if truth.exists() else None, {}, promote=True)
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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            service.stop()
            lines = log.read_text(errors="replace").strip().splitlines()
            raise UserError(f"{name} exited with code {process.returncode} while starting: {lines[-1] if lines else 'no output'} (log: {log})")
        try:
            if httpx.get(health_url, timeout=1.0).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    service.stop()
    raise UserError(f"{name} did not answer {health_url} within {timeout:.0f} s (log: {log})")
