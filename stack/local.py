"""The local stack behind start.sh, stop.sh, restart.sh and reset.sh (the embedded default).

    python -m stack start [--input CSV] [--retrain] [--refresh]
    python -m stack stop | status | restart | reset [--yes]

Everything it starts is a child process of its own session, with its log and PID file
under `<state_dir>/logs` and `<state_dir>/pids`; stop signals only those PIDs, and only
when the process still runs the command line it was started with.

Order: Hive metastore service -> feature job (+ online store) -> training (when no model
is in production) -> model server -> prediction API -> Spark Thrift server. Every Spark
process shares the catalog through the metastore service, so the Thrift server and the
job never fight over the embedded Derby database.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from configuration.errors import UserError, run_cli
from configuration.files import private_dir, private_file, sha256_file
from configuration.settings import REPO_ROOT, Settings, load_settings
from stack.security import ServiceUser, ensure_service_user, ensure_sql_password, require_readable_lake

PYTHON = sys.executable


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


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = Path(settings.paths.state_dir)
        self.logs = self.state / "logs"
        self.pids = self.state / "pids"

    # --- shared environment of every process the stack starts -------------------------
    @property
    def metastore_uri(self) -> str:
        return f"thrift://127.0.0.1:{self.settings.stack.metastore_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARKMAKER_PATHS__LAKE": self.settings.paths.lake,
            "SPARKMAKER_PATHS__STATE_DIR": str(self.state),
            "SPARKMAKER_METASTORE__KIND": "thrift",
            "SPARKMAKER_METASTORE__URIS": self.metastore_uri,
            # The API talks to the model server this stack starts, wherever settings put it.
            "SPARKMAKER_API__MODEL_ENDPOINT": "http",
            "SPARKMAKER_API__MODEL_URL": f"http://{self.settings.serving.host}:{self.settings.serving.port}",
        }

    # --- services --------------------------------------------------------------------
    def services(self, prepare: bool = False) -> list[Service]:
        """The services; `prepare` also makes what starting needs (the SQL server's classes, password, user)."""
        s = self.settings
        model_url = f"http://{s.serving.host}:{s.serving.port}"
        metastore_port = s.stack.metastore_port
        api_url = f"http://{s.api.host}:{s.api.port}"
        return [
            Service("metastore", "Hive metastore", metastore_port,
                    [PYTHON, "-m", "features", "metastore", "--port", str(metastore_port)],
                    self.metastore_uri, lambda: port_open(metastore_port), 120),
            Service("model-server", "Model server", s.serving.port,
                    [PYTHON, "-m", "serving", "--host", s.serving.host, "--port", str(s.serving.port)],
                    model_url, lambda: http_ok(f"{model_url}/ping"), 60),
            Service("api", "API", s.api.port, [PYTHON, "-m", "api", "serve"],
                    api_url, lambda: http_ok(f"{api_url}/health"), 60),
            self.thrift_server(prepare),
        ]

    def thrift_server(self, prepare: bool = True) -> Service:
        s = self.settings
        port = s.stack.thrift_port
        return Service("thrift-server", "SQL (HiveServer2)", port, self.thrift_server_command() if prepare else [],
                       f"jdbc:hive2://127.0.0.1:{port}/{s.features.database}", lambda: port_open(port), 180,
                       env=self.sql_credentials_env() if prepare else {},
                       user=ensure_service_user(s.stack.service_user) if prepare else None)

    def sql_credentials_env(self) -> dict[str, str]:
        from features.java_extensions import sql_server_credentials_env

        return sql_server_credentials_env(self.settings.stack.sql_user, ensure_sql_password(self.state))

    def thrift_server_command(self) -> list[str]:
        """spark-submit of the Thrift server: logins checked against the stored hash, no SQL on files, no file writes or code loading."""
        from features.java_extensions import compiled_classes, default_cache, sql_server_arguments
        from features.metastore import spark_home
        from features.session import session_conf

        settings = self.settings.model_copy(update={"metastore": self.settings.metastore.model_copy(
            update={"kind": "thrift", "uris": self.metastore_uri})})
        conf = session_conf(settings)
        conf["spark.sql.shuffle.partitions"] = "2"
        command = [str(spark_home() / "bin" / "spark-submit"), "--master", "local[1]",
                   "--class", "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2", "--name", "sparkmaker-sql",
                   *sql_server_arguments(compiled_classes(default_cache(self.state)))]
        for key, value in conf.items():
            if key != "spark.driver.memory":
                command += ["--conf", f"{key}={value}"]
        command += ["--driver-memory", "1g",
                    "--hiveconf", f"hive.server2.thrift.port={self.settings.stack.thrift_port}",
                    "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1", "spark-internal"]
        return command

    # --- process bookkeeping -----------------------------------------------------------
    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def running_pid(self, name: str) -> int | None:
        """The PID of a service this stack started and that still runs, else None.

        A PID file records the process's start time too: a PID the system has since
        reused for another program does not match it, so stop never signals a stranger.
        """
        path = self.pid_file(name)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            process = psutil.Process(int(record["pid"]))
            if abs(process.create_time() - float(record["created"])) < 0.01 and process.status() != psutil.STATUS_ZOMBIE:
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
        for path in self.state.glob("predictions.sqlite*"):
            os.chmod(path, 0o600)

    def open_log(self, name: str):
        return open(private_file(self.logs / f"{name}.log"), "ab")

    def write_pid_file(self, name: str, record: dict) -> None:
        private_file(self.pid_file(name)).write_text(json.dumps(record))

    def launch(self, service: Service) -> None:
        self.secure_state()
        log = self.open_log(service.name)
        env, cwd, as_user = {**self.env(), **service.env}, REPO_ROOT, {}
        if service.user is not None:
            require_readable_lake(Path(self.settings.local_lake_path() or self.state), service.user)
            env.update(HOME=str(service.user.home), USER=service.user.name, LOGNAME=service.user.name)
            cwd = service.user.home
            as_user = {"user": service.user.uid, "group": service.user.gid, "extra_groups": []}
        proc = subprocess.Popen(service.command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **as_user)
        created = psutil.Process(proc.pid).create_time()
        self.write_pid_file(service.name, {"pid": proc.pid, "created": created, "command": service.command})
        deadline = time.monotonic() + service.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise UserError(f"{service.label} exited with code {proc.returncode} while starting: "
                                f"{last_line(self.logs / f'{service.name}.log')} (log: {self.logs / f'{service.name}.log'})")
            if service.health():
                return
            time.sleep(0.5)
        raise UserError(f"{service.label} did not become healthy within {service.start_timeout:.0f} s "
                        f"(log: {self.logs / f'{service.name}.log'})")

    def ensure_running(self, service: Service) -> str:
        if self.running_pid(service.name):
            if service.health():
                return "already running"
            raise UserError(f"{service.label} runs but is not healthy: read {self.logs / f'{service.name}.log'}, "
                            "then ./restart.sh")
        if port_open(service.port):
            raise UserError(f"port {service.port} for the {service.label} is taken by another program: stop it or "
                            f"change the port in configuration/local.toml")
        self.launch(service)
        return "started"

    def stop(self, timeout: float = 20.0) -> list[str]:
        done = []
        for service in reversed(self.services()):
            pid = self.running_pid(service.name)
            if pid is None:
                continue
            stop_group(pid, timeout)
            self.pid_file(service.name).unlink(missing_ok=True)
            done.append(f"stopped {service.label} (pid {pid})")
        return done

    # --- one-shot stages ---------------------------------------------------------------
    def run_stage(self, name: str, command: list[str]) -> str:
        """Run a stage to completion; its output goes to its log; a failure names the log."""
        self.secure_state()
        log_path = self.logs / f"{name}.log"
        started = time.perf_counter()
        with self.open_log(name) as log:
            proc = subprocess.run(command, cwd=REPO_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise UserError(f"{name} failed: {last_line(log_path)} (log: {log_path})")
        return f"{time.perf_counter() - started:.0f} s"


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


def last_line(path: Path) -> str:
    """The last meaningful line of a log: what a failed stage said last."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:400]


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


# --- commands ---------------------------------------------------------------------------

def say(text: str) -> None:
    print(text, flush=True)


def take_start_lock(stack: Stack):
    """An flock on <state_dir>/start.lock, held until this process ends; a second start stops in one line.

    The kernel drops the lock however the process ends, so a killed start never blocks the
    next. Services do not inherit the descriptor (Popen closes it), so the lock is the
    start's alone.
    """
    stack.secure_state()
    handle = open(private_file(stack.state / "start.lock"), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"sparkmaker is already starting (pid {holder}) with state in {stack.state}: "
                        "wait for it to finish, then python -m stack status shows each service") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def start(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    lock = take_start_lock(stack)  # noqa: F841 (held while this process runs)
    services = {s.name: s for s in stack.services(prepare=True)}
    say(f"sparkmaker: state in {stack.state}, lake in {settings.paths.lake}")

    say(f"  metastore: {stack.ensure_running(services['metastore'])}")

    from features import lake

    current = lake.read_current(settings)
    csv = Path(args.input).resolve() if args.input else None
    if csv is not None and not csv.is_file():
        raise UserError(f"--input {args.input} is not a file")
    if csv is None and current and not args.refresh:
        say(f"  features: snapshot {current['run_id']} is current (as of {current['as_of']}); --refresh recomputes it")
    else:
        if csv is None:
            csv = current_input(settings, current) or stack.state / "data" / "dataset_credit_risk.csv"
        if not csv.exists():
            rows = settings.stack.sample_rows
            say(f"  sample data: generating {rows:,} rows ...")
            stack.run_stage("sample-data", [PYTHON, "-m", "features.sample_data", "--rows", str(rows),
                                            "--out", str(csv), "--dirty", "0.001"])
        if current and not args.refresh and lake.read_manifest(settings)["input"]["sha256"] == sha256_file(csv):
            say(f"  features: snapshot {current['run_id']} is current for {csv.name}")
        else:
            say(f"  features: running the feature job on {csv} ...")
            took = stack.run_stage("features", [PYTHON, "-m", "features", "--input", str(csv)])
            say(f"  features: snapshot {lake.read_current(settings)['run_id']} published and materialized in {took}")

    from training.registry import open_registry

    registry = open_registry(settings)
    if args.retrain or registry.alias("production") is None:
        say("  training: training a model on the current snapshot (about 1 min) ...")
        source = current_input(settings, lake.read_current(settings))
        truth = source.with_name(source.name.removesuffix(".csv") + ".truth.parquet") if source else None
        command = [PYTHON, "-m", "training", "local", "--promote"]
        command += ["--truth", str(truth)] if truth and truth.exists() else ["--no-truth"]
        took = stack.run_stage("training", command)
        say(f"  training: model {registry.alias('production')} is production ({took})")
    else:
        say(f"  training: model {registry.alias('production')} is production")

    key = ensure_api_key(stack)
    for name in ("model-server", "api", "thrift-server"):
        service = services[name]
        say(f"  {service.label}: {stack.ensure_running(service)}")

    customer = any_customer_id(settings)
    say("")
    for name in ("api", "model-server", "thrift-server", "metastore"):
        say(f"{services[name].label}: {services[name].address}")
    say(f"API key: {key}")
    say(f"SQL user: {settings.stack.sql_user}  password: {ensure_sql_password(stack.state)}  "
        f"(in {stack.state / 'sql-password'})")
    say(f'Try: curl -H "Authorization: Bearer {key}" {services["api"].address}/predict/{customer}')
    say(f"SQL: .venv/lib/python3.11/site-packages/pyspark/bin/beeline -u {services['thrift-server'].address} "
        f"-n {settings.stack.sql_user} -w {stack.state / 'sql-password'} -e 'SELECT * FROM latest_features LIMIT 5'")
    say(f"Logs: {stack.logs}   Stop: ./stop.sh")
    return 0


def current_input(settings: Settings, current: dict | None) -> Path | None:
    """The local CSV the current snapshot was computed from, if it still exists."""
    from features import lake

    if not current:
        return None
    uri = lake.read_manifest(settings, current["run_id"])["input"]["uri"]
    path = Path(uri.removeprefix("file:"))
    return path if lake.is_local(uri) and path.is_file() else None


def ensure_api_key(stack: Stack) -> str:
    """The local API key: created once, kept in <state_dir>/api-key (0600); its hash is what the API checks."""
    path = stack.state / "api-key"
    if not path.exists():
        from api.auth import generate_key

        stack.state.mkdir(parents=True, exist_ok=True)
        key = generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
    from api.auth import hash_key

    key = path.read_text().strip()
    os.environ["SPARKMAKER_API__API_KEY_HASHES"] = json.dumps([hash_key(key)])
    return key


def any_customer_id(settings: Settings) -> int:
    """A customer id of the current latest snapshot, for the example request start.sh prints."""
    import pyarrow.parquet as pq

    from features import lake

    manifest = lake.read_manifest(settings)
    return pq.read_table(manifest["outputs"]["latest"]["uri"], columns=["id"]).column("id")[0].as_py()


def stop(settings: Settings, args: argparse.Namespace) -> int:
    done = Stack(settings).stop()
    say("\n".join(done) if done else "sparkmaker: nothing to stop")
    return 0


def status(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    for service in stack.services():
        pid = stack.running_pid(service.name)
        state = ("healthy" if service.health() else "not healthy") if pid else "stopped"
        say(f"{service.label:<18} {state:<12} {service.address}" + (f"  (pid {pid})" if pid else ""))
    return 0


def restart(settings: Settings, args: argparse.Namespace) -> int:
    stop(settings, args)
    return start(settings, args)


def reset(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    targets = [Path(settings.paths.state_dir)]
    local_lake = settings.local_lake_path()
    if local_lake:
        targets.append(local_lake)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError("reset deletes " + ", ".join(map(str, targets)) + ": confirm with ./reset.sh --yes")
        answer = input(f"Delete {', '.join(map(str, targets))} (lake, metastore, registry, stores, logs)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            say("reset cancelled: nothing deleted")
            return 1
    lock = take_start_lock(stack)  # noqa: F841 (no start may run while everything is deleted)
    for line in stack.stop():
        say(line)
    if settings.online_store.kind == "redis":
        say("note: the Redis online store keeps its keys; they are replaced at the next materialization")
    for target in targets:
        if target.exists():
            shutil.rmtree(target)
            say(f"deleted {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparkmaker", description="Start, stop and reset the local sparkmaker stack.")
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="build what is missing and start every service")
    restart_parser = commands.add_parser("restart", help="stop, then start without recomputing what is current")
    for p in (start_parser, restart_parser):
        p.add_argument("--input", help="raw loans CSV (default: generated sample data)")
        p.add_argument("--retrain", action="store_true", help="train and promote a new model even if one is in production")
        p.add_argument("--refresh", action="store_true", help="rerun the feature job even if the snapshot is current")
    commands.add_parser("stop", help="stop what start started")
    commands.add_parser("status", help="show each service")
    reset_parser = commands.add_parser("reset", help="stop everything and delete the lake, metastore, registry, stores and logs")
    reset_parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    settings = load_settings()
    return {"start": start, "stop": stop, "status": status, "restart": restart, "reset": reset}[args.command](settings, args)


if __name__ == "__main__":
    run_cli(main, "sparkmaker")
