"""uvicorn worker processes, each accepting on a listening socket of its own (SO_REUSEPORT).

uvicorn's own supervisor hands one listening socket to all its workers: whichever worker is
awake when connections arrive accepts every one of them, so a client that opens its keep-alive
connections together (a proxy's pool, a load generator) can put most of them on one worker
while the other idles (26 of 32 in benchmarks/README.md, "the workers' sockets"). Here each
worker listens on a socket of its own, bound to the same address with SO_REUSEPORT, and the
kernel spreads new connections over the sockets by a hash of their addresses.

The supervisor keeps every socket open: connections that reach the socket of a worker being
restarted wait in that socket's queue for the replacement, instead of being refused. A worker
stops when its supervisor dies, even by SIGKILL (Linux's parent-death signal): no orphan keeps
serving the port with nobody to restart or stop it. Linux only
lets sockets of the same user join a SO_REUSEPORT group, so no other user can take a share.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Process

from configuration.errors import UserError
from configuration.network import check_port

log = logging.getLogger("uvicorn.error")


def serve(config: uvicorn.Config) -> int:
    """Run the app of `config` with `config.workers` processes; the exit status (3: a worker could not start)."""
    if config.workers <= 1:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    # Without SO_REUSEPORT, so a port another server's workers share is refused, not joined.
    check_port(config.host, config.port)
    sockets: list[socket.socket] = []
    try:
        for _ in range(config.workers):
            sockets.append(listening_socket(config.host, config.port))
        return Supervisor(config, sockets).run()
    finally:
        for sock in sockets:
            sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port beside the workers' others; it starts listening in its worker."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:  # taken since the caller's check_port, by a server that does not share it
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror}): stop the other server or change the port"
        ) from None
    sock.set_inheritable(True)
    return sock


class Worker(Process):
    """uvicorn's worker process, asking the kernel for SIGTERM when its supervisor dies."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.supervisor = os.getpid()  # pickled with the process object when it starts

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # runs in the worker
        stop_with_parent(self.supervisor)
        super().target(sockets)


def stop_with_parent(parent: int) -> None:
    """SIGTERM this process when `parent` dies (PR_SET_PDEATHSIG); at once if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning(
            "worker [%d] will not stop with its supervisor: prctl failed (errno %d)", os.getpid(), ctypes.get_errno()
        )
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """One worker per socket, restarted on its own socket when it dies or stops answering its health checks."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.processes: list[Process] = []
        self.exit_signal: int | None = None
        self.restart_asked = False

    def start(self, slot: int) -> Process:
        process = Worker(self.config, [self.sockets[slot]])
        process.start()
        return process

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Only plain assignments in the handlers: the loop below acts on them.
            signal.signal(sig, lambda number, frame: setattr(self, "exit_signal", number))
        signal.signal(signal.SIGHUP, lambda number, frame: setattr(self, "restart_asked", True))
        log.info("started supervisor [%d], %d workers each on a socket of its own", os.getpid(), len(self.sockets))
        self.processes = [self.start(slot) for slot in range(len(self.sockets))]
        status = 0
        while self.exit_signal is None:
            time.sleep(0.5)
            if self.exit_signal is None and self.restart_asked:
                self.restart_asked = False
                self.restart_all()
            if self.exit_signal is None and not self.keep_alive():
                status = STARTUP_FAILURE
                break
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join()
        log.info("stopped supervisor [%d]", os.getpid())
        return status

    def restart_all(self) -> None:
        """SIGHUP: each worker replaced by a new one on its socket, the old one stopped once the new one serves."""
        for slot, old in enumerate(self.processes):
            new = self.start(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck * 6):
                new.kill()
                new.join()
                log.error("worker [%s] did not start: keeping worker [%s], restart abandoned", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[slot] = new
        log.info("restarted every worker")

    def keep_alive(self) -> bool:
        """Replace dead or hung workers; False when one failed to start (it would fail the same way again)."""
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker [%s] failed to start: stopping", process.pid)
                return False
            if self.exit_signal is not None:
                return True
            log.warning(
                "worker [%s] died (exit code %s): starting another on its socket", process.pid, process.exitcode
            )
            self.processes[slot] = self.start(slot)
        return True
