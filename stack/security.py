"""Who each service of the local stack runs as, what it may write, and the SQL server's credentials.

- SQL credentials: user `stack.sql_user`, a random 256-bit password made once and kept in
  `<state_dir>/sql-password` (0600) for the person who started the stack; the server is
  given only a salted PBKDF2-SHA256 hash of it (`features.java_extensions.password_hash`), checked by
  `sparkmaker.PasswordAuthenticator` (features/java/).
- Two unprivileged users, where the stack is started as root (system users created if
  absent, no login shell, each in a group of its own, no supplementary groups):
  `stack.service_user` (`sparkmaker`) runs the Hive metastore, the model server and the API;
  `stack.sql_service_user` (`sparkmaker-sql`) runs the SQL server. Two, not one: the SQL
  server runs any SQL a local user with the password sends, so it is the most exposed; as a
  user of its own it cannot open the API's folder (prediction log: customer features),
  read the API's environment (/proc/PID/environ is its owner's: the API key digest, the
  console session key) nor signal the other services. It is given no SPARKMAKER_* variable
  but its password hash (`sql_server_environment`). An empty name runs those services as
  the starting user.
- What each writes, and nothing more (`writable_folders`, the one list): the metastore its
  hive-site.xml folder, the Derby database and the warehouse's database folders; the model
  server its swap control folder; the API its own folder `<state_dir>/api/` (the prediction
  log) and the SQLite online store's folder (its SQLite connection switches the file to WAL
  and creates its schema, which needs write access to the file and its folder). Each is
  given to the service user at every start (so files a root tool made there meanwhile are
  its again); everything else stays root's. The state folder is 0710 with the service
  user's group, so those services can reach their folders in it and list nothing; the
  keys, logs and PID files in it stay 0600 root. The lake must be readable by others.
  Root tools keep full access to what the services own; SQLite run as root gives the
  -wal/-shm files it creates the database file's owner (tests/stack check it).
- Left as the starting user, on purpose: MLflow and Airflow. Airflow's tasks are the
  lifecycle steps (feature job, training, promotion), which write the lake, the registry
  and the state folder as the starting user does; an unprivileged Airflow would need all of
  those to be its own (then the services above could rewrite the production model) or a
  way back to root. MLflow's store (SQLite under `<lake>/registry/mlflow`) is the registry's
  truth and is written by the training processes run as root; run as `sparkmaker` it would
  have to own the store, which would let the API and the model server (same user) move the
  production alias. A third user for MLflow is the way to move it. Both listen on 127.0.0.1
  only, and both ask for a login: without one, any local user, those services' own
  included, could move the production alias through MLflow's REST API, read every run's
  artifacts or upload new ones into the lake as root. MLflow runs its basic-auth app
  (`mlflow_auth`): user admin, a random password made once and kept in
  `<state_dir>/mlflow-password` (0600), its user store under `<state_dir>/mlflow-auth/` (0700);
  only `/health` and the UI's static files answer without it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError
from configuration.files import private_dir
from configuration.settings import Settings

SERVICE_HOMES = Path("/var/lib")  # a service user's home is /var/lib/<name>, 0755
BRIDGES = Path("/var/lib/sparkmaker-python")  # root's: interpreters for the service users (python_for)


def ensure_sql_password(state: Path) -> str:
    """The SQL server's password: made once (256 random bits), kept in <state_dir>/sql-password (0600)."""
    return ensure_secret(state / "sql-password")


def ensure_secret(path: Path) -> str:
    """A password made once (256 random bits) and kept in `path` (0600) under the state folder."""
    if not path.exists():
        if not path.parent.exists():  # an existing state folder keeps its mode (0710 for the service users)
            private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)
    return path.read_text().strip()


MLFLOW_USER = "admin"
MLFLOW_USER_STORE = "users.sqlite"  # the basic-auth app's users: only its admin


@dataclass(frozen=True)
class MlflowAuth:
    user: str
    password: str
    password_path: Path
    env: dict[str, str]  # what `mlflow server --app-name basic-auth` needs to find its configuration


def mlflow_auth(state: Path) -> MlflowAuth:
    """The MLflow server's login and its basic-auth app's configuration (see the module's docstring).

    The app creates its admin user once, from MLFLOW_AUTH_ADMIN_PASSWORD, in its own user store, and
    ignores the variable afterwards; so a password file made anew (deleted by hand) goes with a new
    user store, or the printed password would not be the one that works."""
    folder = private_dir(state / "mlflow-auth")
    password_path = state / "mlflow-password"
    if not password_path.exists():
        (folder / MLFLOW_USER_STORE).unlink(missing_ok=True)
    password = ensure_secret(password_path)
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(write_mlflow_auth_config(folder)),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        # Signs the app's CSRF tokens; kept, so a browser's form survives a restart.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": ensure_secret(folder / "flask-secret-key"),
    }
    return MlflowAuth(MLFLOW_USER, password, password_path, env)


def write_mlflow_auth_config(folder: Path) -> Path:
    """The basic-auth app's configuration in `folder` (0600), its user store beside it; the local stack's and
    the compose cluster's MLflow (compose/roles.py) both use it."""
    config = folder / "basic_auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / MLFLOW_USER_STORE}\n"
        f"admin_username = {MLFLOW_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    if not config.exists() or config.read_text() != text:
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    return config


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    home: Path


def ensure_service_user(name: str) -> ServiceUser | None:
    """The unprivileged user to run services as, created if absent; None when not root or no user is asked for."""
    if not name or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        proc = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                str(SERVICE_HOMES / name),
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 and "already exists" not in proc.stderr:  # another start may have made it
            raise UserError(
                f"cannot create the service user {name}: {proc.stderr.strip()[:200]} "
                '(or set stack.service_user / stack.sql_service_user = "" to run the services as the starting user)'
            ) from None
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise UserError(f"the service user {name} is root: name an unprivileged user")
    home = Path(entry.pw_dir)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    os.chmod(home, 0o755)
    return ServiceUser(name, entry.pw_uid, entry.pw_gid, home)


@dataclass(frozen=True)
class ServiceUsers:
    """Who runs what (None: the starting user): `service` the metastore, model server and API, `sql` the SQL server."""

    service: ServiceUser | None
    sql: ServiceUser | None


def ensure_service_users(service_name: str, sql_name: str) -> ServiceUsers:
    users = ServiceUsers(ensure_service_user(service_name), ensure_service_user(sql_name))
    if users.service and users.sql and (users.service.uid == users.sql.uid or users.service.gid == users.sql.gid):
        raise UserError(
            f"stack.sql_service_user ({sql_name}) must be another user, with another group, than stack.service_user "
            f"({service_name}): the SQL server must not reach the API's prediction log"
        )
    return users


def readable_by_others(path: Path) -> bool:
    """Whether a user with no relation to the owner can reach `path` (x on every parent) and read it."""
    path = path.resolve()
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def require_readable_lake(lake: Path, user: ServiceUser, label: str) -> None:
    lake.mkdir(parents=True, exist_ok=True)
    if not readable_by_others(lake):
        raise UserError(
            f"the {label} runs as user {user.name}, who cannot read the lake {lake}: allow others to enter its "
            'parent folders (chmod o+x) or set stack.service_user and stack.sql_service_user = "" to run as root'
        )


def runnable_by_others(path: Path) -> bool:
    """Whether a user with no relation to the owner can run `path` (x on it and on every parent), links resolved."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def python_for(user: ServiceUser | None, python: str = sys.executable) -> str:
    """The interpreter a Python service runs as `user`: this one when others may run it, else a bridge venv.

    A venv made by a Python under /root (pyenv, as on these machines) links its interpreter
    there, and /root is 0700. The bridge is a venv of the system's Python of the same minor
    version (a compatible ABI) whose one .pth adds this venv's site-packages (its own .pth
    files too): the same packages, an interpreter others may run. Made once per venv, root's.
    """
    if user is None or runnable_by_others(Path(python)):
        return python
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = next(
        (c for c in (Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")) if c.is_file()), None
    )
    if system is None or not runnable_by_others(system):
        raise UserError(
            f"the services run as user {user.name}, who cannot run {python} (its folders are closed to others) and no "
            f"system python{version} was found: install one (apt-get install python{version}) or set "
            'stack.service_user = "" to run them as the starting user'
        )
    site = next(p for p in map(Path, sys.path) if p.name == "site-packages" and str(p).startswith(sys.prefix))
    key = hashlib.sha256(f"{site}\n{system}".encode()).hexdigest()[:12]
    bridge = BRIDGES / key
    interpreter = bridge / "bin" / "python"
    if not interpreter.exists():
        staging = BRIDGES / f".{key}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        BRIDGES.mkdir(parents=True, exist_ok=True)
        os.chmod(BRIDGES, 0o755)
        proc = subprocess.run(
            [str(system), "-m", "venv", "--without-pip", str(staging)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise UserError(f"cannot make a Python for user {user.name} with {system}: {last_words(proc.stderr)}")
        (staging / "lib" / f"python{version}" / "site-packages" / "sparkmaker-venv.pth").write_text(
            f"import site; site.addsitedir({str(site)!r})\n"
        )
        try:
            os.rename(staging, bridge)
        except OSError:  # another start made it first
            shutil.rmtree(staging, ignore_errors=True)
    return str(interpreter)


def last_words(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"


def require_reachable_state(state: Path, user: ServiceUser, label: str) -> None:
    """The folders above the state folder must let others pass (x), or the service never reaches its folder in it."""
    closed = next((p for p in Path(os.path.abspath(state)).parents if not p.stat().st_mode & stat.S_IXOTH), None)
    if closed is not None:
        raise UserError(
            f"the {label} runs as user {user.name}, who cannot pass {closed} to reach its folder in the state folder "
            f'{state}: allow others to enter it (chmod o+x) or set stack.service_user = "" to run as root'
        )


# --- what each service may write --------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """A folder given to a service's user: created if missing, owned by it down to `depth` levels (None: all), mode set.

    `mode` is the folder's own: 0700 for what holds customer data or configuration, 0755
    for what other users read through it (the warehouse, the online store of the lake).
    The files in it keep their modes.
    """

    path: Path
    mode: int = 0o700
    depth: int | None = None


def local_folder(uri: str) -> Path | None:
    """The local path of a path or file:// URI; None for hdfs://, s3a:// and the like."""
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file:").removeprefix("//"))
    return Path(uri) if uri.startswith("/") else None


def writable_folders(settings: Settings, service: str) -> list[Grant]:
    """What `service` (metastore, model-server, api) writes, as folders its user is given; the one list."""
    from features.session import derby_dir, warehouse_dir

    if service == "metastore":
        # Derby's files and derby.log; CREATE DATABASE makes <warehouse>/<db>.db
        # (tables are external: their data is the lake's, written by the feature job).
        # Its hive-site.xml is root's (readable_conf): it reads it, never writes it.
        grants = [Grant(derby_dir(settings))]
        warehouse = local_folder(warehouse_dir(settings))
        return grants + ([Grant(warehouse, 0o755, depth=1)] if warehouse else [])
    if service == "model-server":
        from serving.app import default_control_dir

        control = default_control_dir(settings)
        # The default <state_dir>/serving/port-<port>: the whole serving folder, as every port's is the server's.
        return [Grant(control.parent if not settings.serving.control_dir else control)]
    if service == "api":
        from api.prediction_log import sqlite_log_path

        grants = []
        if settings.api.prediction_log == "sqlite":
            grants.append(Grant(sqlite_log_path(settings).parent))
        if settings.online_store.kind == "sqlite":
            grants.append(Grant(settings.online_sqlite_path().parent, 0o755, depth=1))
        return grants
    return []


def metastore_conf_dir(settings: Settings) -> Path:
    return Path(settings.paths.state_dir) / "metastore-conf"


def give(grant: Grant, user: ServiceUser, roots: list[Path], label: str) -> None:
    """`grant` made the user's; refused (one line) unless it lies strictly inside one of `roots` (state folder, lake)."""
    path = Path(os.path.abspath(grant.path))
    if not any(path != root and path.is_relative_to(root) for root in (Path(os.path.abspath(r)) for r in roots)):
        raise UserError(
            f"the {label} runs as user {user.name} and writes {path}, which is outside the state folder and the lake: "
            'move it inside one of them or set stack.service_user = "" to run it as the starting user'
        )
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():  # its parent is root's: a symlink here was put by root, and is not followed
        raise UserError(f"{path} is a symbolic link: the {label}'s folder must be a folder")
    _chown_tree(path, user, grant.depth)
    os.chmod(path, grant.mode)


def _chown_tree(top: Path, user: ServiceUser, depth: int | None) -> None:
    """chown down to `depth` levels without following a symbolic link, even one swapped in meanwhile.

    The tree is the service's: a process of it could put a link to /etc there while root walks
    it. os.fwalk holds each folder open (O_NOFOLLOW) and names entries relative to it.
    """
    os.chown(top, user.uid, user.gid, follow_symlinks=False)
    for folder, dirs, files, fd in os.fwalk(top, follow_symlinks=False):
        level = len(Path(folder).relative_to(top).parts) + 1
        if depth is not None and level > depth:
            dirs.clear()
            continue
        for name in dirs + files:
            try:
                os.chown(name, user.uid, user.gid, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:  # removed meanwhile (a SQLite -wal at its last close)
                pass
        if depth is not None and level == depth:
            dirs.clear()


def readable_conf(folder: Path, user: ServiceUser) -> None:
    """A folder of configuration root writes and the service reads: root's, the service's group may read it (0750/0640).

    Not the service's own: root writes in it at each start, and must not follow a link the
    service could have put there.
    """
    os.chown(folder, 0, user.gid, follow_symlinks=False)
    os.chmod(folder, 0o750)
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chown(path, 0, user.gid)
            os.chmod(path, 0o640)


def open_state_to(state: Path, group: int) -> None:
    """The state folder 0710 with `group`: the service user's processes reach their folders in it, list nothing."""
    os.chown(state, -1, group)
    os.chmod(state, 0o710)


# Variables the SQL server is given of the SPARKMAKER_* ones: its login check's (everything
# else it needs is on its command line). Others may hold secrets (the API key digest, the
# console session key, the admin token) or paths it has no business with.
SQL_SERVER_VARIABLES = ("SPARKMAKER_SQL_USER", "SPARKMAKER_SQL_PASSWORD_HASH")


def sql_server_environment(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("SPARKMAKER_") or k in SQL_SERVER_VARIABLES}
