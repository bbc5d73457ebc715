"""Small file helpers every component shares: atomic replacement and content hashes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def write_atomic(target: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `target` in one step: readers see the old content or the new, never a part.

    The content is written to a temporary file beside the target, flushed to disk, then
    renamed over it (atomic on POSIX). `mode` defaults to world-readable because models,
    manifests and pointers are read by other users (servers, containers).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (0700), created with its parents if missing."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask, and an existing folder keeps its own
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner can read (0600): created empty if missing, its mode fixed if not.

    For files that hold keys or customer data (the prediction log, logs). A SQLite database
    created this way gives its -wal and -shm files the same mode.
    """
    if not path.parent.exists():
        private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)
    return path
