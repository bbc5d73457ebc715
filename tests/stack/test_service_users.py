"""Started as root, the local stack runs its long-running services as unprivileged users (issue 13, item 1).

A real ./start.sh as root: the metastore, the model server and the API run as
`stack.service_user` (real and effective uid, children too), the SQL server as
`stack.sql_service_user`; a prediction through the API is logged in the API's own folder,
which root tools still read and write; the SQL server's user can open none of the keys, the
prediction log or the API's environment; a second start, stop, status and reset keep working.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest

from configuration.settings import REPO_ROOT
from tests.stack.conftest import scratch_stack

# One ./start.sh as root: 2 to 9 minutes on a busy 2-core machine, so more time than the default.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.geteuid() != 0, reason="the stack drops privileges only when started as root"),
]

SERVICE, SQL = "sparkmaker", "sparkmaker-sql"  # the settings' defaults


def run(name: str, env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"./{name}.sh", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def stack():
    scratch = scratch_stack(3_000, seed=23)
    root, env = scratch["root"], scratch["env"]
    first = run("start", env, "--input", str(scratch["csv"]), "--no-scheduler")
    yield {**scratch, "state": root / "state", "lake": root / "lake", "first": first}
    run("stop", env, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


def started(stack) -> list[str]:
    first = stack["first"]
    assert first.returncode == 0, first.stdout + first.stderr
    return first.stdout.splitlines()


def pid_of(stack, name: str) -> int:
    return json.loads((stack["state"] / "pids" / f"{name}.pid").read_text())["pid"]


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def as_user(user: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *command], capture_output=True, text=True, timeout=60)


def owner(path) -> str:
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def test_each_service_runs_as_its_user(stack):
    started(stack)
    expected = {"metastore": SERVICE, "model-server": SERVICE, "api": SERVICE, "thrift-server": SQL, "mlflow": "root"}
    for name, user in expected.items():
        process = psutil.Process(pid_of(stack, name))
        for p in [process, *process.children(recursive=True)]:
            uids = p.uids()
            assert (uids.real, uids.effective) == (uid(user), uid(user)), (name, p.cmdline()[:3])
            assert p.gids().effective == pwd.getpwnam(user).pw_gid, name
    assert uid(SERVICE) != 0 and uid(SQL) != 0 and uid(SERVICE) != uid(SQL)


def test_a_prediction_is_answered_and_logged_in_the_apis_folder_which_root_tools_still_use(stack):
    lines = started(stack)
    api = next(line.split(": ", 1)[1] for line in lines if line.startswith("API: "))
    key = next(line.split(": ", 1)[1] for line in lines if line.startswith("API key: "))
    customer = int(next(line for line in lines if line.startswith("Try: curl")).rsplit("/", 1)[1])

    def predict() -> str:
        request = urllib.request.Request(f"{api}/predict/{customer}", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            return json.loads(response.read())["request_id"]

    def logged(request_id: str) -> bool:
        import time

        for _ in range(100):  # the writer creates the file and flushes every 200 ms
            if log.exists():
                # root's connection, read and write; mode=rw never creates the file (the API's to make)
                conn = sqlite3.connect(f"file:{log}?mode=rw", uri=True, timeout=10)
                try:
                    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    if "predictions" in tables:
                        sql = "SELECT count(*) FROM predictions WHERE request_id = ?"
                        found = conn.execute(sql, (request_id,)).fetchone()[0]
                        conn.execute("CREATE TABLE IF NOT EXISTS root_tool_was_here (x)")
                        if found == 1:
                            return True
                finally:
                    conn.close()
            time.sleep(0.2)
        return False

    log = stack["state"] / "api" / "predictions.sqlite"
    assert logged(predict())
    folder = log.parent
    assert (owner(folder), stat.S_IMODE(folder.stat().st_mode)) == (SERVICE, 0o700)
    for path in folder.iterdir():  # SQLite run as root gives the -wal/-shm it creates the log's owner
        assert (owner(path), stat.S_IMODE(path.stat().st_mode)) == (SERVICE, 0o600), path
    assert logged(predict())  # the API still writes after root's writes


def test_the_sql_servers_user_cannot_open_keys_log_or_the_apis_environment(stack):
    started(stack)
    state = stack["state"]
    secrets = [
        state / "api-key",
        state / "sql-password",
        state / "console-session.key",
        state / "api" / "predictions.sqlite",
        state / "metastore-conf" / "hive-site.xml",
        state / "logs" / "api.log",
    ]
    assert all(path.is_file() for path in secrets)
    for path in secrets:
        opened = as_user(SQL, "cat", str(path))
        assert opened.returncode != 0 and "Permission denied" in opened.stderr, path
    for name in ("api", "model-server"):
        environ = as_user(SQL, "cat", f"/proc/{pid_of(stack, name)}/environ")
        assert environ.returncode != 0, name
    # nor was it given the digest or the console key: no SPARKMAKER_* but its login check's
    sql_env = psutil.Process(pid_of(stack, "thrift-server")).environ()
    assert sorted(k for k in sql_env if k.startswith("SPARKMAKER_")) == [
        "SPARKMAKER_SQL_PASSWORD_HASH",
        "SPARKMAKER_SQL_USER",
    ]
    assert "SPARKMAKER_API__API_KEY_HASHES" in psutil.Process(pid_of(stack, "api")).environ()
    # it still reads the lake
    assert as_user(SQL, "ls", str(stack["lake"] / "credit_risk")).returncode == 0


def test_the_service_user_reads_nothing_of_roots_and_writes_only_its_folders(stack):
    started(stack)
    state, lake = stack["state"], stack["lake"]
    for path in (state / "api-key", state / "sql-password", state / "console-session.key", state / "logs" / "api.log"):
        assert as_user(SERVICE, "cat", str(path)).returncode != 0, path
    assert as_user(SERVICE, "ls", str(state)).returncode != 0  # it may enter the state folder, not list it
    assert stat.S_IMODE(state.stat().st_mode) == 0o710 and state.stat().st_gid == pwd.getpwnam(SERVICE).pw_gid
    mine = [state / "api", state / "serving", lake / "_metastore", lake / "_warehouse", lake / "online"]
    assert all(owner(path) == SERVICE for path in mine)
    for path in (state, state / "logs", state / "pids", lake, lake / "credit_risk", lake / "registry"):
        assert owner(path) == "root", path
        probe = path / "probe"
        assert as_user(SERVICE, "touch", str(probe)).returncode != 0 and not probe.exists(), path


def command_line(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # a child that just exited (a zombie until reaped) runs nothing
        return []


def test_no_service_user_can_replace_the_classes_the_sql_server_runs(stack):
    started(stack)
    # The class folders on the running SQL server's command line (its password check and guards).
    processes = [psutil.Process(pid_of(stack, "thrift-server"))]
    processes += processes[0].children(recursive=True)
    entries = {e for p in processes for arg in command_line(p) for e in arg.split(":") if "sparkmaker-java" in e}
    folders = [Path(e) for e in entries if Path(e).is_dir()]
    assert folders, "the SQL server runs no compiled classes of its own"
    for folder in folders:
        for path in (folder, *folder.rglob("*")):
            assert owner(path) == "root", path
        for user in (SERVICE, SQL):
            for path in (folder.parent, folder, *[p for p in folder.rglob("*") if p.is_dir()]):
                probe = path / "probe"
                assert as_user(user, "touch", str(probe)).returncode != 0 and not probe.exists(), (user, path)


def test_a_second_start_changes_nothing(stack):
    started(stack)
    watched = [stack["state"], stack["state"] / "api", stack["lake"] / "_metastore", stack["lake"] / "online"]
    before = {p: (p.stat().st_uid, p.stat().st_gid, p.stat().st_mode) for p in watched}
    pids = {name: pid_of(stack, name) for name in ("metastore", "model-server", "api", "thrift-server")}
    again = run("start", stack["env"], "--no-scheduler")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout and ": started" not in again.stdout
    assert {name: pid_of(stack, name) for name in pids} == pids
    assert {p: (p.stat().st_uid, p.stat().st_gid, p.stat().st_mode) for p in watched} == before


def test_status_stop_and_reset_handle_the_other_users_processes_and_files(stack):
    started(stack)
    status = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "python"), "-m", "stack", "status"],
        cwd=REPO_ROOT,
        env=stack["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for label in ("Hive metastore", "Model server", "API", "SQL (HiveServer2)"):
        assert any(line.startswith(label) and " healthy " in line for line in status.stdout.splitlines()), label
    groups = {name: pid_of(stack, name) for name in ("metastore", "model-server", "api", "thrift-server")}
    stopped = run("stop", stack["env"], timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    for name, pid in groups.items():
        assert not [p for p in psutil.process_iter(["pid"]) if _in_group(p, pid)], name
    reset = run("reset", stack["env"], "--yes", timeout=180)
    assert reset.returncode == 0, reset.stderr
    assert not stack["state"].exists() and not stack["lake"].exists()


def _in_group(process: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(process.pid) == group
    except (ProcessLookupError, PermissionError):
        return False
