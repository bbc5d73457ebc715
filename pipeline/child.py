"""Child processes of the pipeline (the feature job, batch scoring) that see exactly the caller's settings.

A step gets a Settings object, which a caller may have built with overrides (the notebooks'
workspace, tests). A child process reads its settings itself, so it gets them as a file:
the whole object written to a TOML file named by SPARKMAKER_CONFIG, with every other
SPARKMAKER_* variable removed from its environment (they would win over the file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from configuration.errors import UserError, last_error_line
from configuration.files import private_file
from configuration.settings import REPO_ROOT, Settings


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def settings_toml(settings: Settings) -> str:
    """Every setting as TOML (unset optional values are left out: they are unset in the child too)."""
    lines: list[str] = []

    def section(prefix: str, model: BaseModel) -> None:
        scalars: list[tuple[str, Any]] = []
        nested: list[tuple[str, Any]] = []
        for name in type(model).model_fields:
            value = getattr(model, name)
            if value is None:
                continue
            (nested if hasattr(type(value), "model_fields") else scalars).append((name, value))
        lines.append(f"[{prefix}]")
        lines.extend(f"{name} = {_toml_value(value)}" for name, value in scalars)
        for name, value in nested:
            section(f"{prefix}.{name}", value)

    for name in type(settings).model_fields:
        section(name, getattr(settings, name))
    return "\n".join(lines) + "\n"


def write_settings(settings: Settings, path: Path) -> Path:
    """The settings as a file a child process loads (0600: it may hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(settings_toml(settings))
    return path


def environ_for(config: Path, **extra: str) -> dict[str, str]:
    """This process's environment without SPARKMAKER_* values, loading `config` instead (plus `extra`, which win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKMAKER_")}
    env.update(SPARKMAKER_CONFIG=str(config), SPARK_LOCAL_IP=os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@contextmanager
def child_env(settings: Settings, **extra: str) -> Iterator[dict[str, str]]:
    """An environment for a child process that loads exactly `settings` (the file lives while the block runs)."""
    state = Path(settings.paths.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=state, prefix=".settings-", suffix=".toml")
    os.close(fd)
    try:
        yield environ_for(write_settings(settings, Path(name)), **extra)
    finally:
        Path(name).unlink(missing_ok=True)


def last_line(path: Path) -> str:
    """The last meaningful line of a log: what a failed child said last."""
    try:
        return last_error_line(path.read_text(errors="replace"))
    except OSError:
        return "no log"


def run_module(settings: Settings, args: list[str], log: Path, what: str, **extra_env: str) -> float:
    """Run `python -m ARGS` to completion with its output in `log`; UserError naming the log if it fails.

    Returns the seconds it took.
    """
    started = time.perf_counter()
    with child_env(settings, **extra_env) as env, open(private_file(log), "ab") as out:
        code = subprocess.run(
            [sys.executable, "-m", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        ).returncode
    if code != 0:
        raise UserError(f"{what} failed: {last_line(log)} (log: {log})")
    return time.perf_counter() - started


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (and so its children's) to `log` while the block runs.

    For a step that runs an entry point in-process which starts children of its own (training's
    runner), so that `python -m pipeline` prints steps, not their logs.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(private_file(log), "ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
