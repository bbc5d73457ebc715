"""Finding a Docker-compatible engine for the container tests, or skipping with a message naming what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PODMAN_SOCKET = Path("/run/podman/podman.sock")


def engine_env_or_skip(what: str) -> dict[str, str]:
    """The environment for `docker` commands that reach a running engine; skips the test otherwise."""
    if shutil.which("docker") is None:
        pytest.skip(f"no docker CLI on PATH: install docker (or podman's docker CLI) to test {what}")
    env = dict(os.environ)
    if not env.get("DOCKER_HOST") and PODMAN_SOCKET.exists():
        env["DOCKER_HOST"] = f"unix://{PODMAN_SOCKET}"
    env.setdefault("DOCKER_BUILDKIT", "0")
    probe = subprocess.run(["docker", "info"], env=env, capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        where = env.get("DOCKER_HOST") or "the default Docker socket (DOCKER_HOST is unset)"
        pytest.skip(
            f"no container engine answers at {where}: start one (shared/containers/engine-up.sh) to test {what}"
        )
    return env
