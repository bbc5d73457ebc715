"""Zero-downtime model swaps: the served model is one reference, replaced in one step.

A request reads `holder.current` once and uses that model for its prediction and its
version header, so every answer carries the version that produced it. A new model is
loaded and probed beside the old one (serving.model.load_model); only a model that
passed is assigned to `current`, and a refused one leaves the old one serving.

What triggers a swap, in every worker process (each watches on its own, so several
workers converge without talking to each other):
- the registry's `production` alias changing (`<registry>/aliases/production`, a one-line
  file replaced atomically: its inode/mtime/size are polled, which costs one stat);
- the desired-model file an admin call leaves in the server's control folder (the worker
  that took the call swaps at once and writes the file; the others follow within one poll).
The newer of the two files wins, so a promotion after an admin pin is followed again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.model import LoadedModel, ModelRefused, ModelSource, load_model
from features.lake import LocalLake

log = logging.getLogger("serving")

DESIRED_FILE = "desired-model.json"


class ModelHolder:
    """The served model. Reads are lock-free; loads are serialized so two swaps cannot interleave."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None
        self._swap_lock = threading.Lock()

    def swap(self, load: Callable[[], LoadedModel]) -> tuple[LoadedModel, LoadedModel | None]:
        """Load beside the current model, then switch; on failure nothing changes and the error propagates."""
        with self._swap_lock:
            candidate = load()
            previous = self.current
            self.current = candidate  # the switch: one reference assignment
            return candidate, previous


@dataclass(frozen=True)
class Signature:
    inode: int
    mtime_ns: int
    size: int


def _signature(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return Signature(stat.st_ino, stat.st_mtime_ns, stat.st_size)


class ModelResolver:
    """Turns a ModelSource into a loaded model (registry versions through the registry)."""

    def __init__(self, registry=None, directory_version: str | None = None) -> None:
        self.registry = registry
        self.directory_version = directory_version

    def load(self, source: ModelSource) -> LoadedModel:
        if source.kind == "registry":
            if self.registry is None:
                raise ModelRefused(f"cannot load registry version {source.version}: this server has no model registry")
            try:
                model_dir = self.registry.model_dir(source.version)
            except ModelRefused:
                raise
            except Exception as exc:  # RegistryError/ArtifactError are UserErrors with a one-line reason
                raise ModelRefused(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
            return load_model(model_dir, source, version=source.version)
        if source.path is None:
            raise ModelRefused("a model directory source names no path")
        return load_model(Path(source.path), source, version=self.directory_version)


class Watcher:
    """Polls the production alias and the desired-model file and swaps when they ask for another model."""

    def __init__(
        self,
        holder: ModelHolder,
        resolver: ModelResolver,
        control_dir: Path,
        base: ModelSource | None,
        alias_path: Path | None,
        interval: float,
    ) -> None:
        self.holder = holder
        self.resolver = resolver
        self.desired_path = Path(control_dir) / DESIRED_FILE
        self.base = base  # the directory served when no admin call asked otherwise (directory mode)
        self.alias_path = alias_path  # registry mode
        self.interval = interval
        self._seen: tuple[Signature | None, Signature | None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # The decision, kept apart from the polling so it can be tested directly.
    def target(self) -> ModelSource | None:
        alias_path = self.alias_path
        alias_sig = _signature(alias_path) if alias_path else None
        desired_sig = _signature(self.desired_path)
        candidates: list[tuple[int, ModelSource]] = []
        if self.base is not None:
            candidates.append((-1, self.base))
        if alias_path is not None and alias_sig is not None:
            version = read_line(alias_path)
            if version:
                candidates.append((alias_sig.mtime_ns, ModelSource("registry", version=version)))
        if desired_sig is not None:
            desired = read_desired(self.desired_path)
            if desired is not None:
                candidates.append((desired_sig.mtime_ns, desired))
        if not candidates:
            return None
        return max(candidates, key=lambda item: item[0])[1]

    def check(self) -> None:
        """One poll: when the files changed and name a model other than the one served, swap to it.

        A refused model is not retried until one of the files changes again.
        """
        seen = (_signature(self.alias_path) if self.alias_path else None, _signature(self.desired_path))
        if seen == self._seen:
            return
        first = self._seen is None
        self._seen = seen
        target = self.target()
        current = self.holder.current
        if target is None:
            if first:
                log.warning("no production model in the registry yet: /ping answers 503 until one is promoted")
            return
        if current is not None and current.source == target:
            return
        try:
            started = time.perf_counter()
            loaded, previous = self.holder.swap(lambda: self.resolver.load(target))
        except ModelRefused as exc:
            self.last_error = str(exc)
            still = f"still serving version {current.version}" if current else "no model is served"
            log.error("refused %s: %s (%s)", target.describe(), exc, still)
            return
        self.last_error = None
        log.info(
            "serving version %s (%s, sha256 %s…) after %.2f s%s",
            loaded.version,
            target.describe(),
            loaded.sha256[:12],
            time.perf_counter() - started,
            f", replacing version {previous.version}" if previous else "",
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise; the served model stays
                log.exception("model watcher: unexpected error; the served model is unchanged")
            self._stop.wait(self.interval)


def read_line(path: Path) -> str | None:
    """A one-line file (the production alias's mirror), None when absent or empty."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def read_desired(path: Path) -> ModelSource | None:
    try:
        return ModelSource.from_json(json.loads(path.read_text(encoding="utf-8"))["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_desired(control_dir: Path, source: ModelSource) -> None:
    """Leave the admin's choice for every worker (atomically: a reader sees the old file or the new one)."""
    document = {"source": source.as_json(), "written_by_pid": os.getpid(), "written_at": time.time()}
    LocalLake().write_text_atomic(str(Path(control_dir) / DESIRED_FILE), json.dumps(document) + "\n")
