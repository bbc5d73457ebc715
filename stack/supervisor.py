"""Process supervision of the local stack: services, PID files, health waits, stopping process groups.

Also the two things every way of running sparkmaker needs the same (the local stack, the
compose roles, the notebooks): the Spark Thrift server's command line and the local API key.

Every service is a child in a session of its own (`start_new_session`), with its log and PID
file under `<state_dir>/logs` and `<state_dir>/pids`; stop signals its whole process group
(servers such as `mlflow server` leave children otherwise), and only when the PID still runs
the process that was started (its start time is in the PID file).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from configuration.errors import UserError
from configuration.files import private_dir, private_file
from configuration.settings import REPO_ROOT, Settings
from pipeline.child import last_line
from stack.security import (
    Grant,
    ServiceUser,
    give,
    open_state_to,
    require_reachable_state,
    require_readable_lake,
)

__all__ = [
    "Service",
    "Supervisor",
    "ensure_api_key",
    "http_ok",
    "last_line",
    "port_open",
    "stop_group",
    "thrift_server_command",
    "wait_healthy",
]


@dataclass(frozen=True)
class Service:
    name: str
    label: str  # what start.sh prints before the address
    port: int
    command: list[str]
    address: str
    health: Callable[[], bool]
    start_timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    user: ServiceUser | None = None  # run as this unprivileged user (see stack/security.py)
    grants: tuple[Grant, ...] = ()  # folders that user is given before each start (security.writable_folders)
    env_filter: Callable[[dict[str, str]], dict[str, str]] | None = None  # what of the environment it may see


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def wait_healthy(process: subprocess.Popen, health: Callable[[], bool], timeout: float, label: str, log: Path) -> None:
    """Until `health()` holds; UserError naming the log if the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(
                f"{label} exited with code {process.returncode} while starting: {last_line(log)} (log: {log})"
            )
        if health():
            return
        time.sleep(0.3)
    raise UserError(f"{label} did not become healthy within {timeout:.0f} s (log: {log})")


def stop_group(pid: int, timeout: float) -> None:
    """SIGTERM to the process group, then SIGKILL after `timeout` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Supervisor:
    """Starts services as children of their own sessions, remembers them in PID files, stops them."""

    def __init__(
        self,
        state_dir: Path,
        env: Callable[[], dict[str, str]],
        lake: Path | None = None,
        private_globs: tuple[str, ...] = (),
    ) -> None:
        self.state = Path(state_dir)
        self.lake = lake  # a local lake that services run as another user must be able to read
        self.logs = self.state / "logs"
        self.pids = self.state / "pids"
        self.env = env
        self.private_globs = private_globs  # files under the state folder that hold customer data: 0600
        self.state_group: int | None = None  # the service user's group, which may enter (not list) the state folder

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def running_pid(self, name: str) -> int | None:
        """The PID of a service this supervisor started and that still runs, else None.

        A PID file records the process's start time too: a PID the system has since
        reused for another program does not match it, so stop never signals a stranger.
        """
        path = self.pid_file(name)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            process = psutil.Process(int(record["pid"]))
            if (
                abs(process.create_time() - float(record["created"])) < 0.01
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                return process.pid
        except (OSError, ValueError, KeyError, psutil.Error):
            pass
        path.unlink(missing_ok=True)
        return None

    def secure_state(self) -> None:
        """The state folder, logs and PID files private to the stack's user: 0700 folders, 0600 files.

        Logs and the prediction log hold customer data and the state folder the keys; files
        made before this rule (0644) are fixed too.
        """
        for folder in (self.state, self.logs, self.pids):
            private_dir(folder)
        for folder in (self.logs, self.pids):
            for path in folder.iterdir():
                if path.is_file():
                    os.chmod(path, 0o600)
        for pattern in self.private_globs:
            for path in self.state.glob(pattern):
                if path.is_file() and not path.is_symlink():
                    os.chmod(path, 0o600)
        if self.state_group is not None:
            open_state_to(self.state, self.state_group)

    def launch(self, service: Service) -> None:
        self.secure_state()
        log = private_file(self.log_file(service.name))
        env: dict[str, str] = {**self.env(), **service.env}
        if service.env_filter is not None:
            env = service.env_filter(env)
        cwd: Path = REPO_ROOT
        as_user: dict[str, Any] = {}  # Popen's user, group and extra_groups
        if service.user is not None:
            if self.lake is not None:
                require_readable_lake(self.lake, service.user, service.label)
            if service.grants:
                require_reachable_state(self.state, service.user, service.label)
            roots = [self.state, *([self.lake] if self.lake else [])]
            for grant in service.grants:
                give(grant, service.user, roots, service.label)
            env.update(HOME=str(service.user.home), USER=service.user.name, LOGNAME=service.user.name)
            # Its home is the working folder (nothing of root's); Python services find the code by PYTHONPATH.
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
            env["PYTHONDONTWRITEBYTECODE"] = "1"  # the repository is root's: no __pycache__ attempts
            cwd = service.user.home
            as_user = {"user": service.user.uid, "group": service.user.gid, "extra_groups": []}
        with open(log, "ab") as out:
            try:
                proc = subprocess.Popen(
                    service.command,
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    **as_user,
                )
            except OSError as exc:
                who = f" as user {service.user.name}" if service.user else ""
                raise UserError(f"cannot start the {service.label}{who}: {exc.strerror}: {exc.filename}") from None
        created = psutil.Process(proc.pid).create_time()
        private_file(self.pid_file(service.name)).write_text(
            json.dumps({"pid": proc.pid, "created": created, "command": service.command})
        )
        wait_healthy(proc, service.health, service.start_timeout, service.label, log)

    def ensure_running(self, service: Service) -> str:
        if self.running_pid(service.name):
            if service.health():
                return "already running"
            raise UserError(
                f"{service.label} runs but is not healthy: read {self.log_file(service.name)}, then ./restart.sh"
            )
        if port_open(service.port):
            raise UserError(
                f"port {service.port} for the {service.label} is taken by another program: stop it or "
                f"change the port in configuration/local.toml"
            )
        self.launch(service)
        return "started"

    def stop(self, services: list[Service], timeout: float = 20.0) -> list[str]:
        done = []
        for service in reversed(services):
            pid = self.running_pid(service.name)
            if pid is None:
                continue
            stop_group(pid, timeout)
            self.pid_file(service.name).unlink(missing_ok=True)
            done.append(f"stopped {service.label} (pid {pid})")
        return done


def thrift_server_command(
    settings: Settings,
    port: int,
    master: str,
    classes: Path,
    bind_host: str = "127.0.0.1",
    driver_memory: str | None = None,
) -> list[str]:
    """The Spark Thrift server (HiveServer2 protocol) over the settings' metastore, as a spark-submit command.

    Logins are checked against the stored hash, and SQL on raw files, file writes and code
    loading are refused (features/java_extensions.py; `classes` holds its compiled classes).
    spark-submit takes those --hiveconf arguments only after --class names the Thrift server.
    """
    from features.java_extensions import sql_server_arguments
    from features.metastore import spark_home
    from features.session import session_conf

    conf = session_conf(settings)
    memory = driver_memory or conf.get("spark.driver.memory", "1g")
    conf.pop("spark.driver.memory", None)
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        master,
        "--name",
        "sparkmaker-sql",
        "--class",
        "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2",
        *sql_server_arguments(classes),
        "--driver-memory",
        memory,
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return command + [
        "--hiveconf",
        f"hive.server2.thrift.port={port}",
        "--hiveconf",
        f"hive.server2.thrift.bind.host={bind_host}",
        "spark-internal",
    ]


def ensure_api_key(state_dir: Path) -> tuple[str, str]:
    """(key, sha256) of the local API key: created once, kept in <state_dir>/api-key (0600); the API checks the hash."""
    from api.auth import generate_key, hash_key

    path = Path(state_dir) / "api-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key() + "\n")
    key = path.read_text().strip()
    return key, hash_key(key)
