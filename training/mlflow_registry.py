"""The model registry on MLflow: every registration is an MLflow run and a version of one registered model.

The MLflow store (`training.mlflow_store.tracking_uri`, default a SQLite file under the
registry folder) is the truth: versions, their lineage tags, the aliases (`production`, and
any other the pipeline sets) and the alias history (registered-model tags
`sparkmaker.history.NNNNNN`, from which the production stack is replayed). The registry folder
(`settings.registry_dir()`) keeps what must be local and cheap:

    aliases/<name>             one line: the version the alias points at (serving polls `production`)
    models/<version>/model/    the version's model directory, downloaded once and sha256-verified
    models/<version>/model.tar.gz   (the old index.json registry's layout: serving and its tests rely on it)
    mlflow/mlflow.db, mlflow/artifacts/   the default store (when mlflow.tracking_uri is empty)
    .lock                      fcntl lock taken around every change

A registration logs, on a new run of the experiment `mlflow.experiment`: the hyperparameters
as params, the validation metrics (and `ceiling_gap` when the truth channel was given), the
lineage tags, and the model directory's files byte for byte (`model/xgboost-model` is the very
file the SageMaker contract reads, in XGBoost's JSON format, with the model card and its
plots), plus the packed `package/model.tar.gz`. Alias changes on one machine are serialised by
the lock; several machines changing aliases of one PostgreSQL store at the same moment are not
(schedule one promoter, as the pipeline does).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configuration.files import write_atomic
from training import artifact, mlflow_store
from training.registry import (
    PRODUCTION,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    nothing_to_roll_back,
    registry_lock,
    stage_model,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

HISTORY_TAG = "sparkmaker.history."
IMPORTED_TAG = "sparkmaker.imported_from"
LINEAGE_KEYS = ("snapshot_run_id", "input_uri", "input_sha256", "as_of", "code_version", "training_uri")
UNKNOWN = "unknown"
MODEL_ARTIFACTS = "model"
PACKAGE_ARTIFACTS = "package"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _safe_uri(uri: str) -> str:
    """The URI without a password, for messages."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        credentials, _, host = rest.partition("@")
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return uri


def _first_line(text: object, limit: int = 300) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def lineage(metadata: dict[str, Any]) -> dict[str, str]:
    """The lineage tags of a model: its feature snapshot, that snapshot's input (URI, sha256) and as_of, the code.

    The snapshot's manifest sits beside its training table (`…/snapshots/<run_id>/manifest.json`);
    when the training data came from elsewhere (or from S3) what is unknown says `unknown`."""
    training = metadata.get("training_data") or {}
    uri = str(training.get("uri") or "")
    manifest: dict[str, Any] = {}
    if uri and ("://" not in uri or uri.startswith("file://")):
        candidate = Path(uri.removeprefix("file://")).parent / "manifest.json"
        try:
            manifest = json.loads(candidate.read_text(encoding="utf-8")) if candidate.is_file() else {}
        except (OSError, ValueError):
            manifest = {}
    source = manifest.get("input") or {}
    values = {
        "snapshot_run_id": training.get("run_id") or manifest.get("run_id"),
        "input_uri": source.get("uri"),
        "input_sha256": source.get("sha256"),
        "as_of": manifest.get("as_of"),
        "code_version": metadata.get("code_version"),
        "training_uri": uri,
    }
    return {key: str(value) if value not in (None, "") else UNKNOWN for key, value in values.items()}


def run_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a model's metadata, nested ones flattened (`confusion_matrix.tp`), plus the ceiling gap."""
    flat: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            flat[key] = float(value)
        elif isinstance(value, dict):
            for inner, number in value.items():
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    flat[f"{key}.{inner}"] = float(number)
    if "ceiling_roc_auc" in flat and "roc_auc" in flat and "ceiling_gap" not in flat:
        flat["ceiling_gap"] = flat["ceiling_roc_auc"] - flat["roc_auc"]
    return flat


def run_params(hyperparameters: dict[str, Any]) -> dict[str, str]:
    return {str(k): (v if isinstance(v, str) else json.dumps(v))[:6000] for k, v in (hyperparameters or {}).items()}


def replay_stack(history: list[dict[str, Any]]) -> list[str]:
    """The production stack the history leaves: a promotion pushes (unless already on top), a rollback pops."""
    stack: list[str] = []
    for entry in history:
        if entry.get("alias") != PRODUCTION:
            continue
        if entry["action"] == "promote" and (not stack or stack[-1] != entry["version"]):
            stack.append(entry["version"])
        elif entry["action"] == "rollback" and stack:
            stack.pop()
    return stack


class MlflowRegistry(ModelRegistry):
    def __init__(
        self,
        root: Path,
        tracking_uri: str | None = None,
        *,
        artifact_location: str | None = None,
        experiment: str = "sparkmaker-credit-risk",
        model_name: str = "sparkmaker-credit-risk",
        on_change=None,
    ) -> None:
        self.root = Path(root)
        self.uri = tracking_uri or f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"
        self.artifact_location = (
            artifact_location
            if artifact_location is not None
            else (None if self.uri.startswith(("http://", "https://")) else str(self.root / "mlflow" / "artifacts"))
        )
        self.experiment = experiment
        self.model_name = model_name
        self.on_change = on_change  # on_change(registry, action, version) after a change (the SageMaker mirror)
        self._client: MlflowClient | None = None

    # Plumbing
    @property
    def client(self):
        if self._client is None:
            mlflow_store.quiet()
            from mlflow.tracking import MlflowClient

            if mlflow_store.is_local_sqlite(self.uri):
                try:
                    Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise RegistryError(
                        f"cannot create the MLflow store at {self.uri} ({exc.strerror}): check mlflow.tracking_uri"
                    ) from None
            with self._errors():
                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @contextmanager
    def _errors(self, unknown_version: str | None = None) -> Iterator[None]:
        """MLflow's exceptions (and the store's underneath) as one line naming the store."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except RegistryError:
            raise
        except MlflowException as exc:
            if unknown_version is not None and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise self._unknown(unknown_version) from None
            raise RegistryError(
                f"the MLflow store {_safe_uri(self.uri)} failed: {_first_line(exc.message)} "
                "(check mlflow.tracking_uri, that its server or database is up and the file is an MLflow database)"
            ) from None
        except Exception as exc:  # sqlalchemy, requests: the store is unreachable or not an MLflow store
            if type(exc).__module__.split(".")[0] not in (
                "sqlalchemy",
                "requests",
                "urllib3",
                "alembic",
                "sqlite3",
                "psycopg",
            ):
                raise
            raise RegistryError(
                f"the MLflow store {_safe_uri(self.uri)} cannot be used ({type(exc).__name__}: {_first_line(exc)}): "
                "check mlflow.tracking_uri, that its server or database is up and the file is an MLflow database"
            ) from None

    def _locked(self):
        return registry_lock(self.root)

    def alias_path(self, name: str = PRODUCTION) -> Path:
        return self.root / "aliases" / name

    def _version_dir(self, version: str) -> Path:
        return self.root / "models" / version

    def _registered(self):
        """The registered model, or None before the first registration."""
        from mlflow.exceptions import MlflowException

        with self._errors():
            try:
                return self.client.get_registered_model(self.model_name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

    def _aliases(self) -> dict[str, str]:
        model = self._registered()
        return {} if model is None else {name: str(v) for name, v in (model.aliases or {}).items()}

    def _all_versions(self) -> list:
        model = self._registered()
        if model is None:
            return []
        with self._errors():
            found = list(self.client.search_model_versions(f"name = '{self.model_name}'", max_results=10000))
        return sorted(found, key=lambda mv: int(mv.version))

    def _unknown(self, version: str) -> RegistryError:
        try:
            known = ", ".join(str(mv.version) for mv in self._all_versions()) or "none yet"
        except RegistryError:
            known = "unknown"
        return RegistryError(
            f"no model version {version!r} in the MLflow registry {self.model_name!r} at {_safe_uri(self.uri)} "
            f"(versions: {known}): list them with python -m training models"
        )

    def _model_version(self, version: str):
        version = str(version).strip()
        if not version.isdigit():
            raise self._unknown(version)
        with self._errors(unknown_version=version):
            return self.client.get_model_version(self.model_name, str(int(version)))

    def _sync_mirror(self, aliases: dict[str, str]) -> None:
        """Rewrite the alias files from the store (atomically, and only those that changed)."""
        folder = self.root / "aliases"
        for name, version in aliases.items():
            path = folder / name
            if not path.is_file() or path.read_text(encoding="utf-8").strip() != version:
                write_atomic(path, version + "\n")
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name not in aliases and not path.name.startswith("."):
                    path.unlink(missing_ok=True)

    @staticmethod
    def _as_version(mv, aliases: dict[str, str]) -> ModelVersion:
        tags = mv.tags or {}

        def number(key: str) -> float | None:
            value = tags.get(key)
            try:
                return None if value in (None, "", "None") else float(value)
            except ValueError:
                return None

        run_id = tags.get("snapshot_run_id")
        training_uri = tags.get("training_uri")
        return ModelVersion(
            version=str(mv.version),
            created_at=tags.get("created_at", ""),
            run_id=None if run_id in (None, UNKNOWN) else run_id,
            roc_auc=number("roc_auc"),
            stage=PRODUCTION if aliases.get(PRODUCTION) == str(mv.version) else None,
            registered_at=tags.get("registered_at", ""),
            threshold=number("threshold"),
            model_sha256=tags.get("model_sha256", ""),
            training_uri=None if training_uri in (None, UNKNOWN) else training_uri,
        )

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        with self._errors():
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                return found.experiment_id
            try:
                return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)
            except MlflowException as exc:  # created by another process in between
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                return self.client.get_experiment_by_name(self.experiment).experiment_id

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        if self._registered() is not None:
            return
        with self._errors():
            try:
                self.client.create_registered_model(
                    self.model_name,
                    description="sparkmaker's credit-risk model (XGBoost; the SageMaker artifact contract)",
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    # The interface
    def register(self, model_tar: Path, metadata: dict[str, Any]) -> str:
        return self.register_with_tags(model_tar, metadata)

    def register_with_tags(
        self, model_tar: Path, metadata: dict[str, Any], extra_tags: dict[str, str] | None = None
    ) -> str:
        """register(), with more tags on the run and the version (the import records where a version came from)."""
        model_tar = Path(model_tar)
        staging = self.root / "staging" / uuid.uuid4().hex
        try:
            packed = stage_model(model_tar, metadata, staging)
            tags = {
                **lineage(packed),
                "model_sha256": packed["model_sha256"],
                "created_at": str(packed.get("created_at", "")),
                "registered_at": _now(),
                "roc_auc": str((packed.get("metrics") or {}).get("roc_auc")),
                "threshold": str(packed.get("threshold")),
                **(extra_tags or {}),
            }
            with self._locked():
                run_id = self._log_run(staging, packed, tags)
                self._ensure_registered_model()
                with self._errors():
                    mv = self.client.create_model_version(
                        self.model_name,
                        f"{self.client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACTS}",
                        run_id=run_id,
                        tags=tags,
                        description=f"ROC-AUC {tags['roc_auc']} on validation, snapshot {tags['snapshot_run_id']}",
                    )
                    version = str(mv.version)
                    self.client.set_tag(run_id, "mlflow.runName", f"{self.model_name}-v{version}")
                    self.client.set_tag(run_id, "model_version", version)
                target = self._version_dir(version)
                if target.exists():  # a cache left by a store that was reset
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging, target)
            if self.on_change is not None:
                self.on_change(self, "register", version)
            return version
        except FileNotFoundError as exc:
            raise RegistryError(f"cannot register {model_tar}: {exc.filename} does not exist") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _log_run(self, staging: Path, metadata: dict[str, Any], tags: dict[str, str]) -> str:
        from mlflow.entities import Metric, Param, RunTag

        with self._errors():
            run = self.client.create_run(self._experiment_id(), tags=tags)
            run_id = run.info.run_id
            try:
                now = int(datetime.now(timezone.utc).timestamp() * 1000)
                self.client.log_batch(
                    run_id,
                    metrics=[Metric(k, v, now, 0) for k, v in run_metrics(metadata.get("metrics") or {}).items()],
                    params=[Param(k, v) for k, v in run_params(metadata.get("hyperparameters") or {}).items()],
                    tags=[RunTag("threshold_rule", str(metadata.get("threshold_rule", "")))],
                )
                self.client.log_artifacts(run_id, str(staging / "model"), MODEL_ARTIFACTS)
                self.client.log_artifact(run_id, str(staging / "model.tar.gz"), PACKAGE_ARTIFACTS)
            except BaseException:
                self.client.set_terminated(run_id, "FAILED")
                raise
            self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def versions(self) -> list[ModelVersion]:
        aliases = self._aliases()
        return [self._as_version(mv, aliases) for mv in self._all_versions()]

    def get(self, version: str) -> ModelVersion:
        mv = self._model_version(version)
        return self._as_version(mv, self._aliases())

    def _cached(self, version: str, name: str, subpath: str, check) -> Path:
        """A local copy of one of the version's artifacts, downloaded once and checked each time.

        A copy already here is checked on its own (the model file against its metadata's sha256)
        without asking the store: serving workers load models through this, and importing MLflow
        and querying the store on every swap would cost them seconds. A download is checked
        against the sha256 the version was registered with."""
        number = str(version).strip()
        if number.isdigit():
            path = self._version_dir(str(int(number))) / name
            if path.exists():
                try:
                    check(path, "")
                except artifact.ArtifactError as exc:
                    # Refused, not silently replaced: serving must not load it, and someone should look.
                    raise artifact.ArtifactError(
                        f"{exc} (delete {path} to fetch version {int(number)} again from the MLflow store)"
                    ) from None
                return path
        mv = self._model_version(version)
        version = str(mv.version)
        expected = (mv.tags or {}).get("model_sha256", "")
        path = self._version_dir(version) / name
        staging = self.root / "staging" / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
            with self._errors():
                downloaded = Path(self.client.download_artifacts(mv.run_id, subpath, str(staging)))
            check(downloaded, expected)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            try:
                os.replace(downloaded, path)
            except OSError:  # another process put its verified copy there first
                check(path, expected)
            return path
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _check_dir(path: Path, expected: str) -> None:
        found = artifact.verify_model_dir(path)["model_sha256"]
        if expected and found != expected:
            raise artifact.ArtifactError(
                f"{path} holds a model whose sha256 differs from the registered one: the MLflow artifacts were changed"
            )

    @staticmethod
    def _check_tar(path: Path, expected: str) -> None:
        if not path.is_file():
            raise artifact.ArtifactError(f"{path} is missing")

    def model_dir(self, version: str) -> Path:
        return self._cached(version, "model", MODEL_ARTIFACTS, self._check_dir)

    def model_tar(self, version: str) -> Path:
        return self._cached(version, "model.tar.gz", f"{PACKAGE_ARTIFACTS}/model.tar.gz", self._check_tar)

    def alias(self, name: str = PRODUCTION) -> str | None:
        aliases = self._aliases()
        if name == PRODUCTION:
            # Heals the mirror when an alias was moved outside this class (MLflow's UI, another host).
            mirror = self.alias_path(PRODUCTION)
            current = mirror.read_text(encoding="utf-8").strip() if mirror.is_file() else None
            if current != aliases.get(PRODUCTION):
                with self._locked():
                    self._sync_mirror(self._aliases())
        return aliases.get(name)

    @staticmethod
    def _history_of(model) -> list[dict[str, Any]]:
        if model is None:
            return []
        entries = sorted((k, v) for k, v in (model.tags or {}).items() if k.startswith(HISTORY_TAG))
        return [json.loads(value) for _, value in entries]

    def history(self) -> list[dict[str, Any]]:
        return self._history_of(self._registered())

    def _move(self, name: str, version: str, action: str, model, previous: str | None = None) -> None:
        """Point alias `name` at `version`, append the history entry, rewrite the mirror (under the lock)."""
        aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
        if previous is None:
            previous = aliases.get(name)
        count = len(self._history_of(model))
        entry = {"action": action, "alias": name, "version": version, "previous": previous, "at": _now()}
        with self._errors():
            self.client.set_registered_model_alias(self.model_name, name, version)
            self.client.set_registered_model_tag(self.model_name, f"{HISTORY_TAG}{count + 1:06d}", json.dumps(entry))
        self._sync_mirror({**aliases, name: version})

    def promote(self, version: str) -> None:
        with self._locked():
            version = str(self._model_version(version).version)
            self._move(PRODUCTION, version, "promote", self._registered())
        if self.on_change is not None:
            self.on_change(self, "promote", version)

    def rollback(self) -> str:
        with self._locked():
            model = self._registered()
            stack = replay_stack(self._history_of(model))
            if len(stack) < 2:
                raise nothing_to_roll_back((model.aliases or {}).get(PRODUCTION) if model is not None else None)
            previous, version = stack[-1], stack[-2]
            self._move(PRODUCTION, version, "rollback", model, previous)
        if self.on_change is not None:
            self.on_change(self, "rollback", version)
        return version

    def set_alias(self, name: str, version: str) -> None:
        if name == PRODUCTION:
            self.promote(version)
            return
        with self._locked():
            version = str(self._model_version(version).version)
            self._move(name, version, "alias", self._registered())

    def annotate(
        self,
        version: str,
        *,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        artifacts: dict[str, Path] | None = None,
    ) -> None:
        from mlflow.entities import Metric, RunTag

        mv = self._model_version(version)
        now = int(datetime.now(timezone.utc).timestamp() * 1000)
        with self._errors():
            if tags or metrics:
                self.client.log_batch(
                    mv.run_id,
                    metrics=[Metric(str(k), float(v), now, 0) for k, v in (metrics or {}).items()],
                    tags=[RunTag(str(k), str(v)) for k, v in (tags or {}).items()],
                )
            for key, value in (tags or {}).items():
                self.client.set_model_version_tag(self.model_name, str(mv.version), str(key), str(value))
            for name, path in (artifacts or {}).items():
                path = Path(path)
                if not path.is_file():
                    raise RegistryError(f"cannot annotate version {mv.version} with {path}: no such file")
                folder = self.root / "staging" / uuid.uuid4().hex
                folder.mkdir(parents=True)
                try:
                    shutil.copyfile(path, folder / Path(name).name)
                    self.client.log_artifact(mv.run_id, str(folder / Path(name).name), "annotations")
                finally:
                    shutil.rmtree(folder, ignore_errors=True)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self._model_version(version).tags or {})

    def run_of(self, version: str) -> str | None:
        return self._model_version(version).run_id

    # For the import (training/registry_import.py)
    def imported_from(self) -> list[str]:
        model = self._registered()
        return [] if model is None else json.loads((model.tags or {}).get(IMPORTED_TAG, "[]"))

    def mark_imported(self, source: str) -> None:
        self._ensure_registered_model()
        with self._locked(), self._errors():
            done = self.imported_from()
            if source not in done:
                self.client.set_registered_model_tag(self.model_name, IMPORTED_TAG, json.dumps([*done, source]))

    def restore(self, aliases: dict[str, str], history: list[dict[str, Any]]) -> None:
        """Append another registry's alias history as it was, then point the aliases where it left them."""
        self._ensure_registered_model()
        with self._locked():
            model = self._registered()
            count = len(self._history_of(model))
            with self._errors():
                for offset, entry in enumerate(history, start=1):
                    self.client.set_registered_model_tag(
                        self.model_name, f"{HISTORY_TAG}{count + offset:06d}", json.dumps(entry)
                    )
                for name, version in aliases.items():
                    self.client.set_registered_model_alias(self.model_name, name, version)
            self._sync_mirror(self._aliases())


def registry_from_settings(settings, on_change=None) -> MlflowRegistry:
    return MlflowRegistry(
        settings.registry_dir(),
        mlflow_store.tracking_uri(settings),
        artifact_location=mlflow_store.artifact_location(settings),
        experiment=settings.mlflow.experiment,
        model_name=settings.mlflow.model_name,
        on_change=on_change,
    )
