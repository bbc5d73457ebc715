"""Ports: a check before a server starts listening (a taken port is one line, not a traceback), and a free one."""

from __future__ import annotations

import errno
import socket

from configuration.errors import UserError


def check_port(host: str, port: int, change: str = "--port") -> None:
    """Raise UserError when host:port cannot be listened on (in use, or not an address of this machine);
    `change` names what sets the port, for the message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is in use: stop the other server or choose another with {change}"
                ) from None
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}): check the address and {change}"
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick), for a server started next."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
