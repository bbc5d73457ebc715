"""`python -m training registry import`: bring an old index.json registry into MLflow, once, losing nothing.

Every version is registered again from its own tarball (so it becomes an MLflow run with its
metrics, lineage and files), tagged `imported_from` / `imported_version`; the alias history is
appended as it was (versions renumbered if the MLflow registry already held some), the aliases
are pointed where the old registry left them, and the gate's old annotations are carried over.
The old folder is left as it is. Running it again changes nothing and says so; an import that
stopped half-way resumes (versions already imported are recognised by their tags).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError
from training import artifact
from training.mlflow_registry import MlflowRegistry
from training.registry import PRODUCTION, LocalRegistry


@dataclass(frozen=True)
class ImportResult:
    source: str
    already: bool
    versions: dict[str, str]  # old version -> MLflow version
    aliases: dict[str, str]  # alias -> MLflow version, as set by the import
    kept_production: str | None = None  # the MLflow registry's own production alias, left as it was


def import_index(source: Path, target: MlflowRegistry, echo=print) -> ImportResult:
    source = Path(source).resolve()
    old = LocalRegistry(source)
    if not old.index_path.is_file():
        raise UserError(
            f"no index.json registry in {source}: pass the folder that holds the old index.json with --from"
        )
    key = str(source)
    if key in target.imported_from():
        return ImportResult(key, True, {}, {})
    index = old._read_index()
    done = {
        (mv.tags or {}).get("imported_version"): str(mv.version)
        for mv in target._all_versions()
        if (mv.tags or {}).get("imported_from") == key
    }
    mapping: dict[str, str] = {}
    for entry in sorted(index["versions"].values(), key=lambda e: int(e["version"])):
        version = entry["version"]
        if version in done:
            mapping[version] = done[version]
            continue
        metadata = artifact.read_metadata(old.model_dir(version))  # verified: sha256 of the model file
        mapping[version] = target.register_with_tags(
            old.model_tar(version),
            metadata,
            extra_tags={
                "imported_from": key,
                "imported_version": version,
                "registered_at": entry.get("registered_at", ""),
            },
        )
        notes = entry.get("annotations")
        if notes:
            folder = old.root / "models" / version / "annotations"
            target.annotate(
                mapping[version],
                tags=notes.get("tags") or {},
                metrics=notes.get("metrics") or {},
                artifacts={name: folder / name for name in notes.get("artifacts") or [] if (folder / name).is_file()},
            )
        echo(f"imported version {version} as MLflow version {mapping[version]}")

    def mapped(value):
        return None if value is None else mapping.get(value, value)

    own_production = target.alias(PRODUCTION)
    aliases = {name: mapping[v] for name, v in index["aliases"].items() if v in mapping}
    history = [
        {**h, "version": mapped(h.get("version")), "previous": mapped(h.get("previous")), "imported_from": key}
        for h in index["history"]
    ]
    if own_production is not None:
        # The MLflow registry already has a production model of its own: its stack stays the truth.
        aliases.pop(PRODUCTION, None)
        history = [h for h in history if h.get("alias") != PRODUCTION]
    target.restore(aliases, history)
    target.mark_imported(key)
    return ImportResult(key, False, mapping, aliases, own_production)


def pending_index(settings) -> Path | None:
    """The old index.json registry in the registry folder when it is not imported yet (else None)."""
    from training.registry import open_registry

    root = settings.registry_dir()
    registry = open_registry(settings)
    if not (root / "index.json").is_file() or not isinstance(registry, MlflowRegistry):
        return None
    return None if str(root.resolve()) in registry.imported_from() else root


def import_if_present(settings, echo=print) -> ImportResult | None:
    """Import the registry folder's old index.json once, if there is one (for start-up scripts: idempotent)."""
    from training.registry import open_registry

    root = pending_index(settings)
    if root is None:
        return None
    registry = open_registry(settings)
    if not isinstance(registry, MlflowRegistry):  # pending_index returns a folder only for an MLflow registry
        raise RuntimeError(f"the registry is {type(registry).__name__}, not an MLflow registry: nothing to import into")
    return import_index(root, registry, echo)
