"""The local stack's SQL server and metastore, attacked as issue 13 did, on a real ./start.sh.

No credentials: refused. SQL on raw files (`text.`<file>``) and `INSERT OVERWRITE
DIRECTORY`: refused. The SQL server runs as its own unprivileged user (when started as
root), the metastore listens on loopback only, logs are 0600, and a second start during the
first one says so in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time

import psutil
import pytest

from configuration.settings import REPO_ROOT
from tests.features.test_metastore_service import listening_addresses
from tests.stack.conftest import scratch_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def started():
    scratch = scratch_stack(3_000, seed=5)
    root, csv, ports, env = scratch["root"], scratch["csv"], scratch["ports"], scratch["env"]
    first = subprocess.Popen(
        ["./start.sh", "--input", str(csv), "--no-scheduler"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lock = root / "state" / "start.lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    second = subprocess.run(
        ["./start.sh", "--input", str(csv), "--no-scheduler"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    out, err = first.communicate(timeout=900)
    yield {"root": root, "env": env, "ports": ports, "first": (first.returncode, out, err), "second": second}
    subprocess.run(["./stop.sh"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


def printed(started, label: str) -> str:
    code, out, err = started["first"]
    assert code == 0, out + err
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(label + ": "))


def sql(started, statement: str, user: str | None = "sparkmaker", password: str | None = None):
    from pyhive import hive

    port = started["ports"]["thrift"]
    if user is None:
        conn = hive.connect("127.0.0.1", port=port, database="credit_risk")
    else:
        conn = hive.connect(
            "127.0.0.1",
            port=port,
            database="credit_risk",
            username=user,
            auth="CUSTOM",
            password=password if password is not None else sql_password(started),
        )
    with conn:
        cursor = conn.cursor()
        cursor.execute(statement)
        return cursor.fetchall()


def sql_password(started) -> str:
    return (started["root"] / "state" / "sql-password").read_text().strip()


def test_a_second_start_during_the_first_says_already_starting(started):
    second = started["second"]
    assert second.returncode == 2
    assert len(second.stderr.strip().splitlines()) == 1
    assert "already starting (pid " in second.stderr and "address already in use" not in second.stderr


def test_credentials_are_printed_and_required(started):
    line = printed(started, "SQL user")
    assert line.startswith("sparkmaker  password: " + sql_password(started))
    assert stat.S_IMODE((started["root"] / "state" / "sql-password").stat().st_mode) == 0o600
    assert sql(started, "SELECT count(*) FROM training_features") == [(3_000,)]
    with pytest.raises(Exception):  # noqa: B017 (PyHive raises transport, SASL or driver errors, by where the server hangs up)
        sql(started, "SELECT 1", user=None)  # no credentials
    with pytest.raises(Exception):  # noqa: B017 (PyHive raises transport, SASL or driver errors, by where the server hangs up)
        sql(started, "SELECT 1", password="wrong")
    with pytest.raises(Exception):  # noqa: B017 (PyHive raises transport, SASL or driver errors, by where the server hangs up)
        sql(started, "SELECT 1", user="root")


def test_the_server_is_given_only_a_hash_of_the_password(started):
    pid = json.loads((started["root"] / "state" / "pids" / "thrift-server.pid").read_text())["pid"]
    process = psutil.Process(pid)
    password = sql_password(started)
    environment = process.environ()
    assert environment["SPARKMAKER_SQL_PASSWORD_HASH"].startswith("pbkdf2_sha256$")
    assert password not in " ".join(process.cmdline()) and password not in json.dumps(environment)


def test_sql_on_raw_files_is_refused(started):
    key_file = started["root"] / "state" / "api-key"
    with pytest.raises(Exception, match="(?i)runSQLOnFiles|table or view|cannot be found|not found"):
        sql(started, f"SELECT value FROM text.`{key_file}`")


def test_writes_outside_the_warehouse_are_refused(started):
    target = started["root"] / "written-by-sql"
    with pytest.raises(Exception, match="refused by the sparkmaker SQL server"):
        sql(started, f"INSERT OVERWRITE DIRECTORY '{target}' USING csv SELECT 1")
    with pytest.raises(Exception, match="refused by the sparkmaker SQL server"):
        sql(started, f"INSERT OVERWRITE LOCAL DIRECTORY '{target}' SELECT 1")
    with pytest.raises(Exception, match="refused by the sparkmaker SQL server"):
        sql(started, "SELECT reflect('java.lang.System', 'getenv', 'HOME')")
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the stack drops privileges only when started as root")
def test_the_sql_server_runs_as_its_own_unprivileged_user(started):
    import pwd

    pid = json.loads((started["root"] / "state" / "pids" / "thrift-server.pid").read_text())["pid"]
    java = [p for p in psutil.Process(pid).children(recursive=True) if "java" in p.name()] or [psutil.Process(pid)]
    for process in java:
        assert process.uids().effective == pwd.getpwnam("sparkmaker-sql").pw_uid != 0


def test_the_metastore_listens_on_loopback_only(started):
    printed(started, "API")
    assert listening_addresses(started["ports"]["metastore"]) == {"127.0.0.1"}


def test_logs_and_state_are_private(started):
    state = started["root"] / "state"
    # 0700, or 0710 for the service user's group when started as root (tests/stack/test_service_users.py)
    assert stat.S_IMODE(state.stat().st_mode) == (0o710 if os.geteuid() == 0 else 0o700)
    logs = list((state / "logs").iterdir())
    assert logs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logs)
