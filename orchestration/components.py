"""Airflow's components run side by side by the project itself, in place of `airflow standalone`.

Why not `airflow standalone`: it starts the scheduler and the triggerer with their log servers,
which Airflow binds on every interface (`[::]` or 0.0.0.0, ports 8793 and 8794; no setting
changes the host), so a machine's neighbours could reach them. Here the scheduler and the
triggerer run with `--skip-serve-logs`, and the one log server this Airflow needs (it hands
the UI the log of a task still running) is started apart, on 127.0.0.1 at
airflow.log_server_port, Airflow's own app under uvicorn. Its tasks name their machine
127.0.0.1 (airflow_path/sparkmaker_airflow_host.py), which is where the UI fetches from. The
triggerer's log server is left out: the DAG defers no task.

It also stops on SIGTERM at once (every component terminated, SIGKILL after a grace period)
and exits with one line naming the component when one of them dies, the others stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from configuration.errors import UserError, last_error_line

# `airflow <args>` for each component; the API server's host and port come from AIRFLOW__API__*.
COMPONENTS: dict[str, list[str]] = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "api-server": ["api-server"],
}
# The app `airflow scheduler` would serve on every interface (airflow.utils.serve_logs.core).
LOG_SERVER_APP = "airflow.utils.serve_logs.log_server:get_app"
GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]


def airflow_components(bin_dir: Path, log_server_port: int) -> list[Component]:
    """The four components, and the task log server on the loopback only, from the Airflow venv's `bin_dir`."""
    airflow = str(bin_dir / "airflow")
    log_server = [
        str(bin_dir / "python"), "-m", "uvicorn", "--factory", LOG_SERVER_APP,
        "--host", "127.0.0.1", "--port", str(log_server_port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return [
        *(Component(name, [airflow, *args]) for name, args in COMPONENTS.items()),
        Component("log-server", log_server),
    ]


def migrate(airflow: str, env: Mapping[str, str]) -> None:
    """Create or upgrade Airflow's metadata database (`airflow db migrate`), as standalone does first."""
    result = subprocess.run(
        [airflow, "db", "migrate"], env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if result.returncode != 0:
        raise UserError(
            f"Airflow's metadata database could not be migrated (airflow db migrate exited {result.returncode}): "
            f"{last_error_line(result.stdout, 300)}; check airflow.database_url"
        )


def _relay(name: str, stream: BinaryIO, out: BinaryIO, lock: threading.Lock) -> None:
    """Copy a component's output to ours line by line, each line prefixed with the component's name."""
    prefix = f"{name:<13} | ".encode()
    for line in iter(stream.readline, b""):
        with lock:
            out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            out.flush()
    stream.close()


def _stop(processes: Sequence[subprocess.Popen], grace: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def supervise(
    components: Sequence[Component],
    env: Mapping[str, str],
    out: BinaryIO | None = None,
    grace: float = GRACE_SECONDS,
) -> None:
    """Run every component until SIGTERM or SIGINT (then return) or until one exits (then raise UserError).

    Either way every other component is terminated, and killed after `grace` seconds.
    """
    out = out or sys.stdout.buffer
    lock = threading.Lock()
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    processes: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []
    try:
        for component in components:
            process = subprocess.Popen(
                component.argv,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            processes.append(process)
            assert process.stdout is not None
            relay = threading.Thread(target=_relay, args=(component.name, process.stdout, out, lock), daemon=True)
            relay.start()
            relays.append(relay)
        while not stopping.wait(0.5):
            ended = [(c, p.returncode) for c, p in zip(components, processes) if p.poll() is not None]
            if ended:
                component, code = ended[0]
                raise UserError(
                    f"Airflow's {component.name} exited with code {code}, so the other components were stopped: "
                    f"its output is above, each line prefixed '{component.name}'"
                )
    finally:
        _stop(processes, grace)
        for relay in relays:
            relay.join(timeout=5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
