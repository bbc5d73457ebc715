"""The supervisor that runs Airflow's components (orchestration/components.py), on real child processes:
a component that dies stops the rest with one line naming it; SIGTERM stops them all, and one that
ignores SIGTERM is killed after the grace period; each output line carries its component's name.
The components themselves, started for real, are in test_stack_airflow.py (slow)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from configuration.errors import UserError
from configuration.settings import REPO_ROOT, Settings
from orchestration import components, runtime

PY = sys.executable


def pid_file_component(name: str, folder: Path, body: str) -> components.Component:
    """A component that writes its pid to <folder>/<name>.pid, then runs `body`."""
    code = f"import os, pathlib, signal, sys, time\npathlib.Path({str(folder / name)!r} + '.pid').write_text(str(os.getpid()))\n"
    return components.Component(name, [PY, "-c", code + textwrap.dedent(body)])


def wait_for_pids(folder: Path, names: list[str], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = [folder / f"{n}.pid" for n in names]
        if all(f.exists() and f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.05)
    raise AssertionError(f"not every component started: {names}")


def test_a_component_that_exits_stops_the_others_with_one_line_naming_it(tmp_path):
    out = io.BytesIO()
    steady = pid_file_component("steady", tmp_path, "print('steady up', flush=True)\ntime.sleep(120)\n")
    dying = pid_file_component(
        "dying", tmp_path, "print('dying: bad config', flush=True)\ntime.sleep(0.5)\nsys.exit(3)\n"
    )
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        components.supervise([steady, dying], os.environ, out=out, grace=5)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Airflow's dying exited with code 3, so the other components were stopped")
    steady_pid = int((tmp_path / "steady.pid").read_text())
    assert not psutil.pid_exists(steady_pid) or psutil.Process(steady_pid).status() == psutil.STATUS_ZOMBIE
    lines = out.getvalue().decode().splitlines()
    assert "steady        | steady up" in lines
    assert "dying         | dying: bad config" in lines


SUPERVISOR = """
import os, sys
from pathlib import Path
from orchestration import components
folder = Path(sys.argv[1])
def component(name, body):
    code = "import os, pathlib, signal, time\\npathlib.Path(%r).write_text(str(os.getpid()))\\n" % str(folder / (name + ".pid"))
    return components.Component(name, [sys.executable, "-c", code + body])
components.supervise(
    [component("polite", "time.sleep(120)\\n"),
     component("stubborn", "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(120)\\n")],
    os.environ, grace=float(sys.argv[2]))
print("supervisor returned", flush=True)
"""


def test_sigterm_stops_every_component_and_one_that_ignores_it_is_killed_after_the_grace(tmp_path):
    # In a process of its own: the supervisor installs signal handlers, and the test sends the signal.
    supervisor = subprocess.Popen(
        [PY, "-c", SUPERVISOR, str(tmp_path), "2"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids = wait_for_pids(tmp_path, ["polite", "stubborn"])
    time.sleep(0.3)  # the stubborn one has installed its SIG_IGN by now (it writes its pid first)
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    output, _ = supervisor.communicate(timeout=30)
    took = time.monotonic() - started
    assert supervisor.returncode == 0, output
    assert "supervisor returned" in output
    assert 1.5 < took < 10, took  # the polite one at once, the stubborn one at the 2 s grace
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_database_airflow_cannot_migrate_is_one_line_naming_the_setting(airflow_venv, tmp_path):
    settings = Settings(airflow={"database_url": "postgresql+psycopg://nobody:wrong@127.0.0.1:1/airflow"})
    env = {**os.environ, **runtime.airflow_environment(settings, tmp_path / "home")}
    with pytest.raises(UserError) as caught:
        components.migrate(str(runtime.AIRFLOW_BIN / "airflow"), env)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500, message
    assert message.startswith("Airflow's metadata database could not be migrated (airflow db migrate exited 1)")
    assert "127.0.0.1" in message and message.endswith("check airflow.database_url")


def test_a_taken_log_server_port_is_one_line_before_any_component_starts(airflow_venv, tmp_path):
    import socket

    from configuration.network import free_port

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        settings = Settings(
            paths={"state_dir": str(tmp_path / "state")}, airflow={"port": free_port(), "log_server_port": taken}
        )
        with pytest.raises(UserError) as caught:
            runtime.serve(settings)
    assert str(caught.value) == (
        f"port {taken} on 127.0.0.1 is in use: stop the other server or choose another with airflow.log_server_port"
    )
    assert not (tmp_path / "state" / "airflow").exists()  # nothing made: no login, no database
