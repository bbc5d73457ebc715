"""The state folder is private (0700 folders, 0600 logs, PID files and keys) and one start runs at a time."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys

from configuration.settings import REPO_ROOT, load_settings
from pipeline.child import run_module
from stack.local import Stack


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stages_write_private_logs_and_existing_files_are_fixed(tmp_path):
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    old_log = state / "logs" / "api.log"
    old_log.write_text("customer 5008804 ...\n")
    os.chmod(state, 0o755)
    os.chmod(state / "logs", 0o755)
    os.chmod(old_log, 0o644)
    (state / "api").mkdir()
    (state / "api" / "predictions.sqlite").write_bytes(b"")
    os.chmod(state / "api" / "predictions.sqlite", 0o644)

    settings = load_settings(paths={"state_dir": str(state), "lake": str(tmp_path / "lake")})
    Stack(settings).supervisor.secure_state()  # what every launch does first
    run_module(settings, ["calendar", "2000", "1"], state / "logs" / "hello.log", "a stage")

    assert "January 2000" in (state / "logs" / "hello.log").read_text()
    for folder in (state, state / "logs", state / "pids"):
        assert mode(folder) == 0o700, folder
    for file in (old_log, state / "logs" / "hello.log", state / "api" / "predictions.sqlite"):
        assert mode(file) == 0o600, file


def test_a_second_start_says_already_starting_in_one_line(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    env = {
        **os.environ,
        "SPARKMAKER_PATHS__STATE_DIR": str(state),
        "SPARKMAKER_PATHS__LAKE": str(tmp_path / "lake"),
        # ports nobody uses: if the lock failed, the start would try to launch a metastore there
        "SPARKMAKER_STACK__METASTORE_PORT": "1",
        "SPARKMAKER_API__PORT": "2",
    }
    with open(state / "start.lock", "w") as held:  # what a running start holds
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        second = subprocess.run(
            [sys.executable, "-m", "stack", "start"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "already starting (pid 4242)" in lines[0], second.stderr
    assert not (state / "logs" / "metastore.log").exists()
