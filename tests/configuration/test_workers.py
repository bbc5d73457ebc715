"""configuration.workers: uvicorn workers each on a SO_REUSEPORT socket of its own, under a supervisor
that restarts them on their sockets and stops them all, run as `python -m api --workers N` runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import uvicorn

from configuration.errors import UserError
from configuration.network import check_port, free_port
from configuration.workers import listening_socket, serve
from configuration.settings import REPO_ROOT

SUPERVISOR = """
import sys, uvicorn
from configuration.workers import serve
config = uvicorn.Config(sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]), workers=int(sys.argv[3]),
                        lifespan="off", log_level="info", timeout_worker_healthcheck=2)
sys.exit(serve(config))
"""


def start(tmp_path: Path, app: str, port: int, workers: int) -> subprocess.Popen:
    log = open(tmp_path / "supervisor.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, app, str(port), str(workers)],
        cwd=REPO_ROOT,
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def read_pid(conn: socket.socket) -> int:
    """The pid in one answer read from `conn` (the app sends a Content-Length)."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < length(answer):
        chunk = conn.recv(4096)
        assert chunk, f"connection closed after {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return int(answer.partition(b"\r\n\r\n")[2])


def length(answer: bytes) -> int:
    head = answer.partition(b"\r\n\r\n")[0].lower()
    return int(head.partition(b"content-length: ")[2].partition(b"\r\n")[0])


def ask_pid(port: int, timeout: float = 30) -> int:
    """One request on a new connection; the answering worker's pid."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return read_pid(conn)


def open_together(port: int, count: int) -> list[socket.socket]:
    """`count` keep-alive connections opened at once, as a proxy's pool or a load generator opens them."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: socket.create_connection(("127.0.0.1", port), timeout=30), range(count)))


def pid_on(conn: socket.socket) -> int:
    conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    return read_pid(conn)


def listening_inodes(pid: int, port: int) -> set[str]:
    """The inodes of the sockets `pid` listens on at `port`: shared sockets have one inode."""
    fds = {c.fd for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}


@pytest.fixture
def supervisor(tmp_path):
    port = free_port()
    process = start(tmp_path, "tests.configuration.pid_app:app", port, 2)
    workers = []
    try:
        deadline = time.monotonic() + 60
        pids: set[int] = set()
        while len(pids) < 2:  # both workers up: new connections reach each in turn
            assert process.poll() is None, (tmp_path / "supervisor.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "supervisor.log").read_text()
            try:
                pids.add(ask_pid(port, timeout=5))
            except OSError:
                time.sleep(0.1)
        workers = psutil.Process(process.pid).children(recursive=True)
        yield process, port, pids
    finally:
        workers += psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for worker in workers:  # a replacement, or a worker the supervisor could not stop
            if worker.is_running():
                worker.kill()


def test_each_worker_listens_on_a_socket_of_its_own(supervisor):
    _, port, pids = supervisor
    inodes = [listening_inodes(pid, port) for pid in pids]
    assert all(len(own) == 1 for own in inodes), inodes
    assert inodes[0] != inodes[1]


def test_connections_opened_together_are_spread_over_both_workers(supervisor):
    _, port, pids = supervisor
    connections = open_together(port, 32)
    try:
        shares = Counter(pid_on(conn) for conn in connections)
    finally:
        for conn in connections:
            conn.close()
    assert set(shares) == pids
    # The kernel hashes each connection's addresses to a socket: a fair coin per connection, so
    # 32 fall 16 +- 3; fewer than 6 on a worker has a chance of 1 in 5,000.
    assert min(shares.values()) >= 6, shares


def test_a_killed_worker_is_replaced_on_its_socket_and_no_connection_is_refused(supervisor):
    process, port, pids = supervisor
    killed = min(pids)
    os.kill(killed, signal.SIGKILL)
    # Connections hashed to the dead worker's socket wait in its queue (the supervisor holds it open)
    # until the replacement accepts them: every one is answered, none refused.
    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(lambda _: ask_pid(port), range(24)))
    assert killed not in answered
    survivor = max(pids)
    replacement = set(answered) - {survivor}
    assert len(replacement) == 1, answered
    assert psutil.Process(replacement.pop()).ppid() == process.pid
    assert process.poll() is None


def test_sigterm_stops_every_worker_and_frees_the_port(supervisor):
    process, port, pids = supervisor
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)
    check_port("127.0.0.1", port)  # raises if anything still holds it


def test_a_worker_that_cannot_start_stops_the_supervisor_with_status_3(tmp_path):
    port = free_port()
    process = start(tmp_path, "tests.configuration.pid_app:no_such_app", port, 2)
    try:
        assert process.wait(timeout=60) == 3, (tmp_path / "supervisor.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = (tmp_path / "supervisor.log").read_text()
    assert "failed to start" in log
    check_port("127.0.0.1", port)


def test_a_port_taken_by_a_server_that_does_not_share_it_is_one_line():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(UserError, match=rf"^cannot listen on 127\.0\.0\.1:{port} \(Address already in use\)"):
            listening_socket("127.0.0.1", port)


def test_a_port_whose_sockets_share_it_is_refused_not_joined(tmp_path):
    """Another server's workers on SO_REUSEPORT sockets: a second supervisor must not take a share of their connections."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = uvicorn.Config("tests.configuration.pid_app:app", host="127.0.0.1", port=port, workers=2)
        with pytest.raises(UserError, match=rf"^port {port} on 127\.0\.0\.1 is in use"):
            serve(config)


def test_the_workers_stop_when_their_supervisor_is_killed(supervisor):
    """SIGKILL leaves the supervisor no chance to stop them: the kernel's parent-death signal does."""
    process, port, pids = supervisor
    workers = psutil.Process(process.pid).children()
    assert pids <= {w.pid for w in workers}
    process.kill()
    process.wait()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [w.pid for w in alive]
    check_port("127.0.0.1", port)


def test_sighup_replaces_every_worker_and_no_request_fails_meanwhile(supervisor):
    process, port, pids = supervisor
    answered: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def ask_without_pause() -> None:
        while not stop.is_set():
            try:
                answered.append(ask_pid(port, timeout=10))
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))

    old_workers = [psutil.Process(pid) for pid in pids]
    asking = threading.Thread(target=ask_without_pause, daemon=True)
    asking.start()
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (pids.isdisjoint(current := set(answered[-40:])) and len(current) == 2):
        time.sleep(0.2)
    stop.set()
    asking.join(timeout=30)
    # None refused. A connection an old worker accepted in its last moment, before it read the
    # request, is closed unanswered (or reset) by uvicorn's shutdown, which closes idle
    # connections: HTTP clients retry those, and uvicorn's own SIGHUP restart does the same.
    refused = [f for f in failures if "Refused" in f]
    assert not refused and len(failures) <= 3, failures[:3]
    assert len(answered) > 20
    assert pids.isdisjoint(answered[-40:]) and len(set(answered[-40:])) == 2, (pids, answered[-40:])
    assert process.poll() is None
    _, alive = psutil.wait_procs(old_workers, timeout=30)  # the supervisor reaps each once it has stopped
    assert not alive, alive
