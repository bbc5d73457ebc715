"""The local stack behind start.sh, stop.sh, restart.sh and reset.sh (the embedded default).

    python -m stack start [--input CSV] [--retrain] [--refresh]
    python -m stack stop | status | restart | reset [--yes]

Everything it starts is a child process of its own session, with its log and PID file
under `<state_dir>/logs` and `<state_dir>/pids`; stop signals only those PIDs, and only
when the process still runs the command line it was started with.

Order: Hive metastore service -> the lifecycle pipeline (pipeline.lifecycle: features
unless current, a challenger when there is reason to train, the gate, promotion) -> MLflow
server -> model server -> prediction API -> Spark Thrift server. Every Spark process shares
the catalog through the metastore service, so the Thrift server and the job never fight
over the embedded Derby database. Process supervision is stack/supervisor.py; this module
is the local stack's wiring.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import shutil
import sys
from pathlib import Path

from configuration.errors import UserError, run_cli
from configuration.files import private_file
from configuration.settings import Settings, load_settings
from stack.supervisor import Service, Supervisor, ensure_api_key, http_ok, port_open, thrift_server_command
from stack.security import (
    ServiceUsers,
    ensure_service_users,
    ensure_sql_password,
    mlflow_auth,
    metastore_conf_dir,
    python_for,
    readable_conf,
    sql_server_environment,
    writable_folders,
)

PYTHON = sys.executable


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = Path(settings.paths.state_dir)
        self.supervisor = Supervisor(
            self.state, self.env, lake=settings.local_lake_path(), private_globs=private_globs(settings)
        )
        self.logs = self.supervisor.logs
        self._users: ServiceUsers | None = None

    def users(self) -> ServiceUsers:
        """Who runs the services (created once if absent); the service user's group may enter the state folder."""
        if self._users is None:
            stack = self.settings.stack
            self._users = ensure_service_users(stack.service_user, stack.sql_service_user)
            if self._users.service is not None:
                self.supervisor.state_group = self._users.service.gid
        return self._users

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

    def pipeline_settings(self) -> Settings:
        """The settings the stack's processes see: the shared metastore service."""
        s = self.settings
        return s.model_copy(
            update={"metastore": s.metastore.model_copy(update={"kind": "thrift", "uris": self.metastore_uri})}
        )

    # --- services --------------------------------------------------------------------
    def services(self, prepare: bool = False) -> list[Service]:
        """The services; `prepare` also makes what starting needs (the SQL server's classes, password, users)."""
        s = self.settings
        model_url = f"http://{s.serving.host}:{s.serving.port}"
        api_url = f"http://{s.api.host}:{s.api.port}"
        user = self.users().service if prepare else None
        grants = (lambda name: tuple(writable_folders(s, name))) if user else (lambda name: ())
        python = python_for(user)
        return [
            self.metastore_service(prepare),
            self.mlflow_service(prepare),
            Service(
                "model-server",
                "Model server",
                s.serving.port,
                [python, "-m", "serving", "--host", s.serving.host, "--port", str(s.serving.port)],
                model_url,
                lambda: http_ok(f"{model_url}/ping"),
                60,
                user=user,
                grants=grants("model-server"),
            ),
            Service(
                "api",
                "API",
                s.api.port,
                [python, "-m", "api", "serve"],
                api_url,
                lambda: http_ok(f"{api_url}/health"),
                60,
                env=self.api_secrets_env() if user else {},
                user=user,
                grants=grants("api"),
            ),
            self.thrift_server(prepare),
            self.airflow_service(),
        ]

    def metastore_service(self, prepare: bool) -> Service:
        """The Hive metastore service (java, sparkmaker.BoundMetaStore); `prepare` writes its hive-site.xml.

        The command is made here, by the starting user, so that the service user needs to write
        neither the configuration nor the compiled classes (features.metastore.service_command).
        """
        from features.metastore import service_command

        port = self.settings.stack.metastore_port
        user = self.users().service if prepare else None
        command: list[str] = []
        if prepare:
            conf = metastore_conf_dir(self.settings)
            command = service_command(self.pipeline_settings(), port, conf)
            if user:
                readable_conf(conf, user)
        return Service(
            "metastore",
            "Hive metastore",
            port,
            command,
            self.metastore_uri,
            lambda: port_open(port),
            120,
            user=user,
            grants=tuple(writable_folders(self.settings, "metastore")) if user else (),
        )

    def api_secrets_env(self) -> dict[str, str]:
        """What the API reads of root's, given in its environment (its owner's and root's to read): the console key.

        The key stays in <state_dir>/console-session.key (0600, root's); the API signs with a
        key derived from it (api.console.session hashes a configured secret).
        """
        if not self.settings.console.enabled or self.settings.console.session_secret.get_secret_value():
            return {}
        from api.console.session import session_secret

        return {"SPARKMAKER_CONSOLE__SESSION_SECRET": session_secret(self.settings).hex()}

    def thrift_server(self, prepare: bool = True) -> Service:
        """The SQL server; `prepare` makes what starting it needs (its classes, the password, the service user)."""
        from features.java_extensions import compiled_classes, default_cache

        s = self.settings
        port = s.stack.thrift_port
        command = (
            thrift_server_command(
                self.pipeline_settings(),
                port,
                "local[1]",
                driver_memory="1g",
                classes=compiled_classes(default_cache(self.state)),
            )
            if prepare
            else []
        )
        return Service(
            "thrift-server",
            "SQL (HiveServer2)",
            port,
            command,
            f"jdbc:hive2://127.0.0.1:{port}/{s.features.database}",
            lambda: port_open(port),
            180,
            env=self.sql_credentials_env() if prepare else {},
            user=self.users().sql if prepare else None,
            env_filter=sql_server_environment,  # nothing of the API's (key digest, console key) reaches it
        )

    def sql_credentials_env(self) -> dict[str, str]:
        from features.java_extensions import sql_server_credentials_env

        return sql_server_credentials_env(self.settings.stack.sql_user, ensure_sql_password(self.state))

    def airflow_service(self) -> Service:
        """Airflow (scheduler, DAG processor, triggerer, API server: orchestration/components.py) in its own venv."""
        from orchestration import runtime

        port = self.settings.airflow.port
        return Service(
            "airflow",
            "Airflow",
            port,
            [PYTHON, "-m", "orchestration", "serve"],
            f"http://127.0.0.1:{port}",
            lambda: runtime.healthy(port),
            300,
        )

    def mlflow_service(self, prepare: bool = False) -> Service:
        """`mlflow server` over the registry's own store (SQLite and artifacts under the lake), for a person to browse,
        behind its basic-auth app (security.mlflow_auth; `prepare` makes the login)."""
        from training.mlflow_store import artifact_location, tracking_uri

        s = self.settings
        host, port = s.mlflow.host, s.mlflow.port
        url = f"http://{host}:{port}"
        command = [
            str(Path(PYTHON).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            tracking_uri(s),
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            "--app-name",
            "basic-auth",
        ]
        artifacts = artifact_location(s)
        if artifacts:
            command += ["--artifacts-destination", artifacts]
        env = mlflow_auth(self.state).env if prepare else {}
        return Service("mlflow", "MLflow", port, command, url, lambda: http_ok(f"{url}/health"), 120, env=env)

    # --- process bookkeeping (stack/supervisor.py) --------------------------------------
    def running_pid(self, name: str) -> int | None:
        return self.supervisor.running_pid(name)

    def ensure_running(self, service: Service) -> str:
        return self.supervisor.ensure_running(service)

    def stop(self, timeout: float = 20.0) -> list[str]:
        """Stop the services, and a standalone Spark cluster started from this state folder (stop.sh, reset.sh)."""
        from stack import spark_cluster  # it builds on Stack

        done = self.supervisor.stop(self.services(), timeout)
        if self.running_pid(spark_cluster.MASTER) is not None or spark_cluster.recorded_workers(self):
            done += spark_cluster.stop(self.settings, timeout)
        return done


def private_globs(settings: Settings) -> tuple[str, ...]:
    """Files under the state folder that hold customer data, as globs relative to it (made 0600 at each start)."""
    from api.prediction_log import sqlite_log_path

    log = sqlite_log_path(settings)
    state = Path(settings.paths.state_dir)
    return (f"{log.relative_to(state)}*",) if log.is_relative_to(state) else ()


def move_old_prediction_log(settings: Settings) -> None:
    """A prediction log at the old default <state_dir>/predictions.sqlite moved into <state_dir>/api/, once."""
    from api.prediction_log import sqlite_log_path

    old, new = Path(settings.paths.state_dir) / "predictions.sqlite", sqlite_log_path(settings)
    if settings.api.prediction_log_sqlite or not old.is_file() or new.exists():
        return
    new.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{old}{suffix}").exists():
            os.replace(f"{old}{suffix}", f"{new}{suffix}")


# --- commands ---------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def take_start_lock(stack: Stack):
    """An flock on <state_dir>/start.lock, held until this process ends; a second start stops in one line.

    The kernel drops the lock however the process ends, so a killed start never blocks the
    next. Services do not inherit the descriptor (Popen closes it), so the lock is the
    start's alone.
    """
    stack.supervisor.secure_state()
    handle = open(private_file(stack.state / "start.lock"), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(
            f"sparkmaker is already starting (pid {holder}) with state in {stack.state}: "
            "wait for it to finish, then python -m stack status shows each service"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def start(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    stack.users()  # first: the lock's secure_state keeps the state folder open to the running services' group
    lock = take_start_lock(stack)  # noqa: F841 (held while this process runs)
    services = {s.name: s for s in stack.services(prepare=True)}
    say(f"sparkmaker: state in {stack.state}, lake in {settings.paths.lake}")

    say(f"  metastore: {stack.ensure_running(services['metastore'])}")
    ensure_class_archive(settings)
    csv = run_lifecycle(stack, args)  # the input this start used: the Airflow DAG's default input

    key, digest = ensure_api_key(stack.state)
    move_old_prediction_log(settings)
    os.environ["SPARKMAKER_API__API_KEY_HASHES"] = json.dumps([digest])
    for name in ("mlflow", "model-server", "api", "thrift-server"):
        service = services[name]
        say(f"  {service.label}: {stack.ensure_running(service)}")

    airflow_login = None if args.no_scheduler else start_airflow(stack, services["airflow"], csv)

    customer = any_customer_id(settings)
    say("")
    for name in ("api", "model-server", "thrift-server", "metastore", "mlflow"):
        say(f"{services[name].label}: {services[name].address}")
    mlflow_login = mlflow_auth(stack.state)
    say(
        f"MLflow login: user {mlflow_login.user}, password {mlflow_login.password} (kept in {mlflow_login.password_path})"
    )
    if settings.console.enabled:
        say(f"Console: {services['api'].address}/console")
    if airflow_login:
        say(f"Airflow: {services['airflow'].address}")
        say(
            f"Airflow login: user {airflow_login.user}, password {airflow_login.password} (kept in {airflow_login.path}); "
            "DAG credit_risk_lifecycle"
        )
    say(f"API key: {key}")
    say(
        f"SQL user: {settings.stack.sql_user}  password: {ensure_sql_password(stack.state)}  "
        f"(in {stack.state / 'sql-password'})"
    )
    say(f'Try: curl -H "Authorization: Bearer {key}" {services["api"].address}/predict/{customer}')
    say(
        f"SQL: .venv/lib/python3.11/site-packages/pyspark/bin/beeline -u {services['thrift-server'].address} "
        f"-n {settings.stack.sql_user} -w {stack.state / 'sql-password'} -e 'SELECT * FROM latest_features LIMIT 5'"
    )
    say(f"Logs: {stack.logs}   Stop: ./stop.sh")
    return 0


def ensure_class_archive(settings: Settings) -> None:
    """Spark's class archive (features.class_archive), built once per Java and jars; the stack runs without one."""
    if not settings.spark.class_archive:
        return
    from features import class_archive

    try:
        class_archive.build(settings, class_archive.default_folder(settings), say=lambda line: say(f"  {line}"))
    except UserError as exc:
        say(f"  {exc}")


def run_lifecycle(stack: Stack, args: argparse.Namespace) -> Path:
    """The input (given, the current snapshot's, or generated sample data), then the pipeline's whole run; returns the input.

    Without --input the current snapshot's input and as_of are taken again, so the pipeline
    finds everything current and changes nothing; --refresh recomputes the features,
    --retrain trains a challenger and promotes it whatever the gate says.
    """
    from features import lake
    from pipeline import lifecycle
    from training.registry import open_registry

    from training.registry_import import import_if_present

    settings = stack.pipeline_settings()
    import_if_present(settings, echo=lambda line: say("  registry: " + line))  # an old index.json registry, once
    current = lake.read_current(settings)
    csv = Path(args.input).resolve() if args.input else None
    if csv is not None and not csv.is_file():
        raise UserError(f"--input {args.input} is not a file")
    as_of = None
    if csv is None:
        csv = current_input(settings, current)
        if csv is not None and current is not None and not args.refresh:  # a CSV is found only for a current snapshot
            as_of = dt.date.fromisoformat(current["as_of"])
        csv = csv or stack.state / "data" / "dataset_credit_risk.csv"
    if not csv.exists():
        from pipeline.child import run_module

        rows = settings.stack.sample_rows
        say(f"  sample data: generating {rows:,} rows ...")
        run_module(
            settings,
            ["features.sample_data", "--rows", str(rows), "--out", str(csv), "--dirty", "0.001"],
            stack.logs / "sample-data.log",
            "generating the sample data",
        )
    key = dt.datetime.now(dt.timezone.utc).strftime("stack-%Y%m%dT%H%M%SZ")
    params = lifecycle.Params(input=str(csv), as_of=as_of, force=args.retrain, force_features=args.refresh)
    lifecycle.run(settings, key, params, say=lambda line: say("  " + line))
    if open_registry(settings).alias() is None:
        raise UserError(
            "no model in production: the gate refused the first model (see the line above); "
            "start with --retrain to promote it anyway, or give a larger --input"
        )
    return csv


def start_airflow(stack: Stack, service: Service, csv: Path):
    """Airflow's venv (installed once), its login (generated once, 0600), then the service.

    The DAG ingests airflow.input_uri, else the CSV this start used (--input, the current
    snapshot's, or the generated sample data).
    """
    from dataclasses import replace

    from orchestration import runtime

    settings = stack.settings
    if not settings.airflow.input_uri:
        service = replace(service, env={**service.env, "SPARKMAKER_AIRFLOW__INPUT_URI": str(csv)})
    if not runtime.AIRFLOW_VENV.exists():
        say("  Airflow: installing its venv (.venv-airflow, about 300 MB, once) ...")
    runtime.ensure_venv()  # here, not in the service, so that its time is not the health check's
    login = runtime.ensure_login(runtime.airflow_home(settings))
    say(f"  {service.label}: {stack.ensure_running(service)}")
    return login


def current_input(settings: Settings, current: dict | None) -> Path | None:
    """The local CSV the current snapshot was computed from, if it still exists."""
    from features import lake

    if not current:
        return None
    uri = lake.read_manifest(settings, current["run_id"])["input"]["uri"]
    path = Path(uri.removeprefix("file:"))
    return path if lake.is_local(uri) and path.is_file() else None


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
        p.add_argument(
            "--retrain", action="store_true", help="train a challenger and promote it whatever the gate says"
        )
        p.add_argument("--refresh", action="store_true", help="rerun the feature job even if the snapshot is current")
        p.add_argument(
            "--no-scheduler", action="store_true", help="do not start Airflow (the DAG credit_risk_lifecycle)"
        )
    commands.add_parser("stop", help="stop what start started")
    commands.add_parser("status", help="show each service")
    reset_parser = commands.add_parser(
        "reset", help="stop everything and delete the lake, metastore, registry, stores and logs"
    )
    reset_parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    from stack import spark_cluster

    spark_cluster.add_command(commands)
    args = parser.parse_args(argv)
    settings = load_settings()
    return {
        "start": start,
        "stop": stop,
        "status": status,
        "restart": restart,
        "reset": reset,
        "spark-cluster": spark_cluster.command,
    }[args.command](settings, args)


if __name__ == "__main__":
    run_cli(main, "sparkmaker")
