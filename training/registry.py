"""The model registry: numbered model versions, their metadata, and the `production` alias.

`ModelRegistry` is the interface every backend keeps; `open_registry(settings)` returns the
configured one: `MlflowRegistry` (training/mlflow_registry.py, the default and the one
registry), or with `training.registry_backend = "index"` the old `LocalRegistry` below, kept
as the reader `python -m training registry import` needs.

The old layout (`settings.registry_dir()`, default `<lake>/registry`):

    index.json                      versions, aliases, the production stack and the promotion history
    models/<version>/model.tar.gz   the tarball as registered
    models/<version>/model/         the same, unpacked and verified (what a server loads)
    aliases/production              one line: the production version (a mirror for cheap watching)
    .lock                           fcntl lock taken around every change

Every change happens under an exclusive `flock` on `.lock`, and `index.json` and the alias
file are replaced atomically (write a temporary file, `os.replace`), so two promotions or
registrations at once, from threads or processes, cannot corrupt the index, and a reader
never sees a half-written one. `index.json` is the truth; the alias file is rewritten from
it on every change.
"""

from __future__ import annotations

import abc
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from configuration.files import write_atomic
from training import artifact

PRODUCTION = "production"
INDEX_FORMAT = 1


class RegistryError(UserError):
    """The registry cannot do what was asked (unknown version, nothing to roll back to, corrupt index)."""


@dataclass(frozen=True)
class ModelVersion:
    version: str
    created_at: str  # when the model was trained (from its metadata)
    run_id: str | None  # the feature snapshot it was trained on
    roc_auc: float | None  # on its validation rows
    stage: str | None  # "production" for the production model, None otherwise
    registered_at: str = ""
    threshold: float | None = None
    model_sha256: str = ""
    training_uri: str | None = None


class ModelRegistry(abc.ABC):
    """What training, the CLI and serving need from a registry, whatever holds it."""

    @abc.abstractmethod
    def register(self, model_tar: Path, metadata: dict[str, Any]) -> str:
        """Store a packed model with its metadata; return its new version ("1", "2", ...)."""

    @abc.abstractmethod
    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""

    @abc.abstractmethod
    def get(self, version: str) -> ModelVersion:
        """One version; RegistryError if there is none."""

    @abc.abstractmethod
    def model_dir(self, version: str) -> Path:
        """A local, unpacked and verified model directory of that version."""

    @abc.abstractmethod
    def model_tar(self, version: str) -> Path:
        """The model.tar.gz of that version."""

    @abc.abstractmethod
    def alias(self, name: str = PRODUCTION) -> str | None:
        """The version an alias points at, or None."""

    @abc.abstractmethod
    def promote(self, version: str) -> None:
        """Make `version` the production model."""

    @abc.abstractmethod
    def rollback(self) -> str:
        """Make the previous production model production again; return its version."""

    @abc.abstractmethod
    def set_alias(self, name: str, version: str) -> None:
        """Point any alias at `version` (`production` goes through promote: its stack and history)."""

    @abc.abstractmethod
    def history(self) -> list[dict[str, Any]]:
        """Every alias change, oldest first: {"action", "alias", "version", "previous", "at"}."""

    @abc.abstractmethod
    def annotate(
        self,
        version: str,
        *,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        artifacts: dict[str, Path] | None = None,
    ) -> None:
        """Record more about a version on its run: tags, metrics and files (artifact name -> local file).

        The evaluation gate writes its decision here. Tags and metrics of the same name are replaced."""

    @abc.abstractmethod
    def tags(self, version: str) -> dict[str, str]:
        """The tags recorded with a version (lineage and what `annotate` added, e.g. the gate's `gate.*`)."""

    @abc.abstractmethod
    def run_of(self, version: str) -> str | None:
        """The MLflow run id of the version's training run (None where the backend has no runs)."""

    def metadata(self, version: str) -> dict[str, Any]:
        """The full model-metadata.json of that version."""
        return artifact.read_metadata(self.model_dir(version))

    def production_dir(self) -> Path | None:
        """The production model directory, or None when no model was promoted yet."""
        version = self.alias(PRODUCTION)
        return None if version is None else self.model_dir(version)


def stage_model(model_tar: Path, metadata: dict[str, Any], staging: Path) -> dict[str, Any]:
    """Copy and unpack a tarball into `staging` (model.tar.gz, model/), checked against the metadata given.

    Done outside the registry lock (the slow part), in a folder on the registry's file system
    so that moving it into place is one rename. Returns the model's own metadata."""
    staging.mkdir(parents=True)
    shutil.copyfile(model_tar, staging / "model.tar.gz")
    packed = artifact.unpack(staging / "model.tar.gz", staging / "model")
    if packed["model_sha256"] != metadata.get("model_sha256"):
        raise RegistryError(
            f"the metadata given for {model_tar} does not describe the model inside it (sha256 differs): register the tarball with its own metadata"
        )
    return packed


@contextmanager
def registry_lock(root: Path) -> Iterator[None]:
    """The exclusive fcntl lock on `<root>/.lock` every change of a registry is made under (threads and processes)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / ".lock", "a+")
    except OSError as exc:
        raise RegistryError(
            f"cannot open the model registry at {root} ({exc.strerror}): check the path and its permissions"
        ) from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def nothing_to_roll_back(current: str | None) -> RegistryError:
    what = f"version {current} is the first production model" if current else "no model was promoted yet"
    return RegistryError(f"nothing to roll back to: {what}; promote a version with python -m training promote VERSION")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _empty_index() -> dict[str, Any]:
    return {"format_version": INDEX_FORMAT, "versions": {}, "aliases": {}, "production_stack": [], "history": []}


def _version_key(version: str) -> int:
    return int(version)


class LocalRegistry(ModelRegistry):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # Layout
    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def alias_path(self, name: str = PRODUCTION) -> Path:
        return self.root / "aliases" / name

    def _version_dir(self, version: str) -> Path:
        return self.root / "models" / version

    # Index I/O
    def _read_index(self) -> dict[str, Any]:
        if not self.index_path.is_file():
            return _empty_index()
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(
                f"registry index {self.index_path} is not valid JSON ({exc}): restore it from a backup"
            ) from None
        if not isinstance(index, dict) or index.get("format_version") != INDEX_FORMAT:
            raise RegistryError(
                f"registry index {self.index_path} is not a format {INDEX_FORMAT} index: restore it from a backup"
            )
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        write_atomic(self.index_path, json.dumps(index, indent=2) + "\n")
        # The mirror follows the index: rewritten on every change, so a crash between the
        # two writes heals at the next change.
        production = index["aliases"].get(PRODUCTION)
        mirror = self.alias_path(PRODUCTION)
        if production is None:
            mirror.unlink(missing_ok=True)
        elif not mirror.is_file() or mirror.read_text(encoding="utf-8").strip() != production:
            write_atomic(mirror, production + "\n")

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the registry lock; yield the index; whoever changes it calls _write_index."""
        with registry_lock(self.root):
            yield self._read_index()

    def _entry(self, index: dict[str, Any], version: str) -> dict[str, Any]:
        version = str(version).strip()
        entry = index["versions"].get(version)
        if entry is None:
            known = ", ".join(sorted(index["versions"], key=_version_key)) or "none yet"
            raise RegistryError(
                f"no model version {version!r} in the registry {self.root} (versions: {known}): list them with python -m training models"
            )
        return entry

    @staticmethod
    def _as_version(entry: dict[str, Any], index: dict[str, Any]) -> ModelVersion:
        stage = PRODUCTION if index["aliases"].get(PRODUCTION) == entry["version"] else None
        return ModelVersion(
            version=entry["version"],
            created_at=entry.get("created_at", ""),
            run_id=entry.get("run_id"),
            roc_auc=entry.get("roc_auc"),
            stage=stage,
            registered_at=entry.get("registered_at", ""),
            threshold=entry.get("threshold"),
            model_sha256=entry.get("model_sha256", ""),
            training_uri=entry.get("training_uri"),
        )

    # The interface
    def register(self, model_tar: Path, metadata: dict[str, Any]) -> str:
        model_tar = Path(model_tar)
        staging = self.root / "staging" / uuid.uuid4().hex
        try:
            stage_model(model_tar, metadata, staging)
            with self._locked() as index:
                versions = [_version_key(v) for v in index["versions"]]
                version = str(max(versions, default=0) + 1)
                target = self._version_dir(version)
                if target.exists():  # left over by a crash between the move and the index write
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging, target)
                training_data = metadata.get("training_data") or {}
                index["versions"][version] = {
                    "version": version,
                    "created_at": metadata.get("created_at", ""),
                    "registered_at": _now(),
                    "run_id": training_data.get("run_id"),
                    "training_uri": training_data.get("uri"),
                    "roc_auc": (metadata.get("metrics") or {}).get("roc_auc"),
                    "threshold": metadata.get("threshold"),
                    "model_sha256": metadata.get("model_sha256"),
                    "code_version": metadata.get("code_version"),
                }
                self._write_index(index)
            return version
        except FileNotFoundError as exc:
            raise RegistryError(f"cannot register {model_tar}: {exc.filename} does not exist") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def versions(self) -> list[ModelVersion]:
        index = self._read_index()
        ordered = sorted(index["versions"].values(), key=lambda e: _version_key(e["version"]))
        return [self._as_version(entry, index) for entry in ordered]

    def get(self, version: str) -> ModelVersion:
        index = self._read_index()
        return self._as_version(self._entry(index, version), index)

    def model_dir(self, version: str) -> Path:
        entry = self._entry(self._read_index(), version)
        path = self._version_dir(entry["version"]) / "model"
        artifact.verify_model_dir(path)
        return path

    def model_tar(self, version: str) -> Path:
        entry = self._entry(self._read_index(), version)
        path = self._version_dir(entry["version"]) / "model.tar.gz"
        if not path.is_file():
            raise RegistryError(f"{path} is missing: the registry folder was changed by hand, re-register the model")
        return path

    def alias(self, name: str = PRODUCTION) -> str | None:
        return self._read_index()["aliases"].get(name)

    def history(self) -> list[dict[str, Any]]:
        return list(self._read_index()["history"])

    def set_alias(self, name: str, version: str) -> None:
        if name == PRODUCTION:
            self.promote(version)
            return
        with self._locked() as index:
            version = self._entry(index, version)["version"]
            previous = index["aliases"].get(name)
            index["aliases"][name] = version
            index["history"].append(
                {"action": "alias", "alias": name, "version": version, "previous": previous, "at": _now()}
            )
            self._write_index(index)

    def annotate(
        self,
        version: str,
        *,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        artifacts: dict[str, Path] | None = None,
    ) -> None:
        with self._locked() as index:
            entry = self._entry(index, version)
            notes = entry.setdefault("annotations", {"tags": {}, "metrics": {}, "artifacts": []})
            notes["tags"].update({str(k): str(v) for k, v in (tags or {}).items()})
            notes["metrics"].update({str(k): float(v) for k, v in (metrics or {}).items()})
            folder = self._version_dir(entry["version"]) / "annotations"
            for name, path in (artifacts or {}).items():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, folder / Path(name).name)
                if Path(name).name not in notes["artifacts"]:
                    notes["artifacts"].append(Path(name).name)
            self._write_index(index)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.annotations(version)["tags"])

    def annotations(self, version: str) -> dict[str, Any]:
        entry = self._entry(self._read_index(), version)
        return entry.get("annotations", {"tags": {}, "metrics": {}, "artifacts": []})

    def run_of(self, version: str) -> str | None:
        return self._entry(self._read_index(), version).get("mlflow_run_id")

    def promote(self, version: str) -> None:
        with self._locked() as index:
            version = self._entry(index, version)["version"]
            previous = index["aliases"].get(PRODUCTION)
            index["aliases"][PRODUCTION] = version
            stack = index["production_stack"]
            if not stack or stack[-1] != version:
                stack.append(version)
            index["history"].append(
                {"action": "promote", "alias": PRODUCTION, "version": version, "previous": previous, "at": _now()}
            )
            self._write_index(index)

    def rollback(self) -> str:
        with self._locked() as index:
            stack = index["production_stack"]
            if len(stack) < 2:
                raise nothing_to_roll_back(index["aliases"].get(PRODUCTION))
            previous = stack.pop()
            version = stack[-1]
            index["aliases"][PRODUCTION] = version
            index["history"].append(
                {"action": "rollback", "alias": PRODUCTION, "version": version, "previous": previous, "at": _now()}
            )
            self._write_index(index)
            return version


def open_registry(settings) -> ModelRegistry:
    """The configured registry: MLflow (training.registry_backend = "mlflow", the default), or the old index.json one."""
    if settings.training.registry_backend == "index":
        return LocalRegistry(settings.registry_dir())
    from training.mlflow_registry import registry_from_settings

    on_change = None
    if settings.mlflow.sagemaker_mirror:
        from training.sagemaker_mirror import mirror_for

        on_change = mirror_for(settings)
    return registry_from_settings(settings, on_change=on_change)
