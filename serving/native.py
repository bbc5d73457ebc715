"""serving/ensemble.c, compiled once per source and Python, loaded by serving.tree_eval when it can be.

    module = native.ensemble()   # the extension module, or None (then the Python evaluator answers)

It is compiled with the system's C compiler (`cc`, `gcc`) against this Python's headers the first
time a process needs it, into a folder of its own: `/var/lib/sparkmaker-native` for root (as
features.java_extensions keeps its classes), else `$XDG_CACHE_HOME/sparkmaker/native` or
`~/.cache/sparkmaker/native`, mode 0700. A shared library is code: it is only loaded from a folder
that this user owns and nobody else can write, and it is written under a temporary name and renamed,
so a half-written file is never loaded. The file name carries a hash of the source, the Python
version and the flags, so an edit or an upgrade compiles anew (and the older file is removed); a
file already built is loaded without a compiler.

No compiler, no headers, a failed build or a folder that fails those checks: one warning in the
log, and None. `SPARKMAKER_NATIVE_ENSEMBLE=0` turns it off (the Python evaluator alone answers).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

log = logging.getLogger("serving.native")

SOURCE = Path(__file__).with_name("ensemble.c")
MODULE = "sparkmaker_ensemble"
FLAGS = ["-O2", "-std=c11", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared", "-Wall"]
COMPILE_TIMEOUT_SECONDS = 120


def cache_root() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/sparkmaker-native")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparkmaker" / "native"


def compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _private_folder(folder: Path) -> str | None:
    """Why `folder` may not hold code this process loads, or None when it is ours alone."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.stat()
    if info.st_uid != os.geteuid():
        return f"{folder} belongs to another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{folder} can be written by other users"
    return None


def _build(cc: str, include: str, target: Path) -> None:
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        done = subprocess.run(
            [cc, *FLAGS, f"-I{include}", str(SOURCE), "-o", partial, "-lm"],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise OSError(f"{cc} exited {done.returncode}: {last[:300]}")
        os.chmod(partial, 0o755)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def ensemble_arrays(
    left: list[int],
    right: list[int],
    feature: list[int],
    value: list[float],
    default_left: list[bool],
    roots: list[int],
) -> tuple[bytes, ...]:
    """The node arrays as `build` (serving/ensemble.c) takes them: int32, int32, int32, float32, uint8, int32."""
    return (
        struct.pack(f"{len(left)}i", *left),
        struct.pack(f"{len(right)}i", *right),
        struct.pack(f"{len(feature)}i", *feature),
        struct.pack(f"{len(value)}f", *value),
        bytes(default_left),
        struct.pack(f"{len(roots)}i", *roots),
    )


@functools.lru_cache(maxsize=1)
def ensemble() -> ModuleType | None:
    """The compiled module, built if needed; None (logged once) when it cannot be had."""
    if os.environ.get("SPARKMAKER_NATIVE_ENSEMBLE", "1") == "0":
        return None
    try:
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        digest = hashlib.sha256(SOURCE.read_bytes())
        digest.update(f"{sys.version}|{suffix}|{' '.join(FLAGS)}".encode())
        folder = cache_root()
        refused = _private_folder(folder)
        if refused:
            raise OSError(refused)
        target = folder / f"{MODULE}-{digest.hexdigest()[:16]}{suffix}"
        if not target.is_file():
            cc = compiler()
            include = sysconfig.get_paths()["include"]
            if cc is None:
                raise OSError("no C compiler (cc, gcc or clang) on PATH")
            if not (Path(include) / "Python.h").is_file():
                raise OSError(f"no Python.h under {include} (install Python's development headers)")
            _build(cc, include, target)
            # Earlier sources' builds go (a process still using one keeps it mapped).
            for stale in folder.glob(f"{MODULE}-*{suffix}"):
                if stale != target:
                    stale.unlink(missing_ok=True)
        spec = importlib.util.spec_from_file_location(MODULE, target)
        if spec is None or spec.loader is None:
            raise OSError(f"cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except (OSError, ImportError, subprocess.SubprocessError) as exc:
        log.warning("the compiled tree walk is not available (%s): the Python evaluator answers", exc)
        return None
