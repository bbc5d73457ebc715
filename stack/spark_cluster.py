"""A Spark standalone cluster on this machine: a master and N workers, from the PySpark wheel's own classes.

    python -m stack spark-cluster start [--workers N]   # master + N workers (default spark_cluster.workers)
    python -m stack spark-cluster status
    python -m stack spark-cluster stop

Then run any Spark step on it with `--master spark://127.0.0.1:<spark_cluster.master_port>`
(the feature job, `serving batch` through SPARKMAKER_SPARK__MASTER, spark-submit).

The same processes a cluster manager would run (`spark-class org.apache.spark.deploy.master.Master`
and `...worker.Worker`), supervised like the rest of the local stack (stack.local.Stack):
each is a process group of its own with its log in `<state_dir>/logs/spark-*.log`, its PID
file in `<state_dir>/pids`, and executors' work folders (their stdout/stderr per
application) in `<state_dir>/spark-cluster/work-<i>`. Everything binds 127.0.0.1
(SPARK_LOCAL_IP, --host): the master's web UI at spark_cluster.master_ui_port, worker i's at
worker_ui_port + i, its RPC port at worker_port + i.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from configuration.settings import Settings
from stack.local import Stack, say
from stack.supervisor import Service, port_open, stop_group

MASTER = "spark-master"
WORKER_PREFIX = "spark-worker-"


def master_url(settings: Settings) -> str:
    return f"spark://127.0.0.1:{settings.spark_cluster.master_port}"


def cluster_state(settings: Settings) -> dict[str, Any] | None:
    """The master's own view (its web UI's /json/): workers, cores, applications; None when it does not answer."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{settings.spark_cluster.master_ui_port}/json/", timeout=2
        ) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None


def alive_worker_ports(settings: Settings) -> set[int]:
    state = cluster_state(settings) or {}
    return {int(w["port"]) for w in state.get("workers", []) if w.get("state") == "ALIVE"}


def _spark_class() -> str:
    from features.metastore import spark_home

    return str(spark_home() / "bin" / "spark-class")


def master_service(settings: Settings) -> Service:
    c = settings.spark_cluster
    command = [
        _spark_class(),
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(c.master_port),
        "--webui-port",
        str(c.master_ui_port),
    ]
    return Service(
        MASTER,
        "Spark master",
        c.master_port,
        command,
        master_url(settings),
        lambda: port_open(c.master_port) and cluster_state(settings) is not None,
        90,
    )


def worker_service(settings: Settings, index: int) -> Service:
    """Worker `index` (1-based): one JVM offering worker_cores and worker_memory to executors."""
    c = settings.spark_cluster
    port = c.worker_port + index - 1
    work_dir = Path(settings.paths.state_dir) / "spark-cluster" / f"work-{index}"
    work_dir.mkdir(parents=True, exist_ok=True)
    command = [
        _spark_class(),
        "org.apache.spark.deploy.worker.Worker",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--webui-port",
        str(c.worker_ui_port + index - 1),
        "--cores",
        str(c.worker_cores),
        "--memory",
        c.worker_memory,
        "--work-dir",
        str(work_dir),
        master_url(settings),
    ]
    return Service(
        f"{WORKER_PREFIX}{index}",
        f"Spark worker {index}",
        port,
        command,
        f"127.0.0.1:{port}",
        lambda: port in alive_worker_ports(settings),
        90,
    )


def recorded_workers(stack: Stack) -> list[int]:
    """Indexes of the workers with a PID file, whatever --workers they were started with."""
    indexes = []
    for path in stack.supervisor.pids.glob(f"{WORKER_PREFIX}*.pid") if stack.supervisor.pids.exists() else ():
        suffix = path.stem[len(WORKER_PREFIX) :]
        if suffix.isdigit():
            indexes.append(int(suffix))
    return sorted(indexes)


def start(settings: Settings, workers: int | None = None) -> list[str]:
    """Start the master, then the workers not yet running; each line says what happened."""
    count = settings.spark_cluster.workers if workers is None else workers
    if count < 1:
        raise UserError(f"--workers {count}: a cluster needs at least one worker")
    stack = Stack(settings)
    lines = [f"Spark master {master_url(settings)}: {stack.ensure_running(master_service(settings))}"]
    for index in range(1, count + 1):
        service = worker_service(settings, index)
        lines.append(f"Spark worker {index} at {service.address}: {stack.ensure_running(service)}")
    return lines


def stop(settings: Settings, timeout: float = 20.0) -> list[str]:
    """Stop every worker this state folder started, then the master (SIGTERM, SIGKILL after `timeout`)."""
    stack = Stack(settings)
    done = []
    for name in [f"{WORKER_PREFIX}{i}" for i in reversed(recorded_workers(stack))] + [MASTER]:
        pid = stack.running_pid(name)
        if pid is not None:
            stop_group(pid, timeout)
            done.append(f"stopped {name} (pid {pid})")
        stack.supervisor.pid_file(name).unlink(missing_ok=True)
    return done or ["no Spark cluster was running from this state folder"]


def status(settings: Settings) -> list[str]:
    stack = Stack(settings)
    state = cluster_state(settings)
    pid = stack.running_pid(MASTER)
    if pid is None and state is None:
        return ["Spark master: not running (start it: python -m stack spark-cluster start)"]
    lines = [
        f"Spark master {master_url(settings)}: pid {pid or 'not ours'}, "
        f"{'healthy' if state is not None else 'not answering'} (UI http://127.0.0.1:{settings.spark_cluster.master_ui_port})"
    ]
    for worker in (state or {}).get("workers", []):
        lines.append(
            f"  worker {worker.get('host')}:{worker.get('port')} {worker.get('state')}: "
            f"{worker.get('coresused', 0)}/{worker.get('cores')} cores, "
            f"{worker.get('memoryused', 0)}/{worker.get('memory')} MB used"
        )
    for app in (state or {}).get("activeapps", []):
        lines.append(f"  application {app.get('name')} ({app.get('id')}): {app.get('cores')} cores")
    return lines


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "spark-cluster",
        help="start, stop or show a Spark standalone cluster on this machine",
        description=__doc__.split("\n\n", 1)[0],
        epilog="Ports and sizes: the [spark_cluster] settings. Run a job on it with --master spark://127.0.0.1:PORT.",
    )
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--workers", type=int, help="workers to start (default: spark_cluster.workers)")


def command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "start":
        lines = start(settings, args.workers)
        lines.append(f"use it: --master {master_url(settings)}")
    elif args.action == "stop":
        lines = stop(settings)
    else:
        lines = status(settings)
    for line in lines:
        say(line)
    return 0
