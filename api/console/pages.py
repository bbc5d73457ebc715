"""What the models, data and monitoring pages show, read through the platform's own interfaces.

Each function returns plain data for a template and never raises for a state of the
platform (no registry yet, a lake that is not local, a package that is missing): it says
what is missing instead, in one line, as the rest of the project does.

    models_page(settings)      training.registry.open_registry: versions(), metadata(v), model_dir(v), alias(), history()
    data_page(settings)        features.retention.list_snapshots, features.lake.read_current/read_manifest, rejects Parquet
    monitoring_page(settings)  monitoring.latest(settings) when `import monitoring` works
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from configuration.settings import Settings

log = logging.getLogger("api.console")

PLOTS = {"roc": "roc.png", "calibration": "calibration.png"}  # training.artifact.ROC_FILE, CALIBRATION_FILE


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


# Models ------------------------------------------------------------------------------------
def gate_decisions(registry: Any, version: str) -> list[dict[str, Any]] | None:
    """The evaluation gate's decisions about a version, as the registry holds them, or None when none are recorded.

    Read, in this order: `registry.decisions(version)` (a list of dicts), else the version's
    tags whose name starts with "gate" (`registry.tags(version)`), else a `gate` entry of
    its metadata. The pipeline records them with `registry.annotate(version, tags=...)`.
    """
    for reader in ("decisions", "tags"):
        method = getattr(registry, reader, None)
        if method is None:
            continue
        try:
            found = method(version)
        except Exception as exc:  # a registry that cannot answer: say so, do not fail the page
            log.warning("cannot read the gate decisions of version %s: %s", version, exc)
            return None
        if reader == "tags" and isinstance(found, dict):
            found = [{"name": k, "value": v} for k, v in sorted(found.items()) if k.startswith("gate")]
        if found:
            return [d if isinstance(d, dict) else {"decision": str(d)} for d in found]
    return None


def _card_html(path: Path) -> str | None:
    """The model card (Markdown) as HTML: raw HTML in it is escaped, its image lines are dropped (the plots are shown apart)."""
    if not path.is_file():
        return None
    from markdown_it import MarkdownIt

    text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("!["))
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def models_page(settings: Settings) -> dict[str, Any]:
    try:
        from training.registry import PRODUCTION, open_registry

        registry = open_registry(settings)
        versions = registry.versions()
        production = registry.alias(PRODUCTION)
    except ImportError as exc:
        return {"error": f"the model registry cannot be read here: the package {exc.name} is missing"}
    except (UserError, OSError, ValueError) as exc:
        return {"error": f"the model registry cannot be read: {_one_line(exc)}"}
    rows = []
    for v in reversed(versions):  # newest first
        row: dict[str, Any] = {"version": v.version, "summary": v, "production": v.version == production}
        try:
            metadata = registry.metadata(v.version)
            model_dir = registry.model_dir(v.version)
            row["metadata"] = metadata
            row["metrics"] = metadata.get("metrics") or {}
            row["lineage"] = metadata.get("training_data") or {}
            row["card_html"] = _card_html(model_dir / "model-card.md")
            row["plots"] = [name for name, file in PLOTS.items() if (model_dir / file).is_file()]
        except Exception as exc:  # one broken version must not hide the others
            row["error"] = f"version {v.version} cannot be read: {_one_line(exc)}"
        row["decisions"] = gate_decisions(registry, v.version)
        rows.append(row)
    history = []
    if hasattr(registry, "history"):
        try:
            history = list(reversed(registry.history()))[:50]
        except Exception as exc:
            log.warning("cannot read the registry history: %s", exc)
    return {"versions": rows, "production": production, "history": history, "error": None}


def plot_path(settings: Settings, version: str, plot: str) -> Path | None:
    """The file of one plot of one version, or None (unknown plot, version or file)."""
    if plot not in PLOTS:
        return None
    try:
        from training.registry import open_registry

        path = open_registry(settings).model_dir(version) / PLOTS[plot]
    except Exception:
        return None
    return path if path.is_file() else None


# Data --------------------------------------------------------------------------------------
def rejects_sample(uri: str, rows: int) -> tuple[list[str], list[list[Any]]]:
    """At most `rows` rejected rows (column names, values), read from the first Parquet fragments only."""
    import pyarrow.dataset as ds

    from features import lake

    if not lake.is_local(uri):
        raise UserError(f"the rejects {uri} are not on a local lake")
    table = ds.dataset(str(lake.local_path(uri)), format="parquet").head(rows)
    names = table.column_names
    return names, [[row[name] for name in names] for row in table.to_pylist()]


def data_page(settings: Settings, run_id: str | None) -> dict[str, Any]:
    from features import lake, retention

    try:
        snapshots = retention.list_snapshots(settings)
        current = lake.read_current(settings)
    except (UserError, OSError, ValueError) as exc:
        return {"error": f"the snapshots cannot be listed: {_one_line(exc)}"}
    current_id = current["run_id"] if current else None
    rows: list[dict[str, Any]] = []
    for s in snapshots:
        manifest: dict[str, Any] | None = None
        if s.complete:
            try:
                manifest = lake.read_manifest(settings, s.run_id)
            except (UserError, OSError, ValueError):
                manifest = None
        rejects = (manifest or {}).get("rejects") or {}
        rows.append(
            {
                "snapshot": s,
                "manifest": manifest,
                "current": s.run_id == current_id,
                "rejects_text": ", ".join(f"{reason} {count:,}" for reason, count in rejects.items() if count)
                or "none",
                "size": f"{s.size_bytes / 1e6:,.1f} MB" if s.size_bytes >= 100_000 else f"{s.size_bytes / 1e3:,.1f} kB",
            }
        )
    chosen = next((r for r in rows if r["snapshot"].run_id == (run_id or current_id)), None)
    if run_id and chosen is None:
        return {"error": f"no snapshot {run_id}: pick one from the list", "snapshots": rows, "current": current_id}
    sample: dict[str, Any] = {"columns": [], "rows": [], "note": None}
    if chosen is not None and chosen["manifest"]:
        rejects = (chosen["manifest"].get("outputs") or {}).get("rejects")
        if not rejects:
            sample["note"] = "this snapshot's manifest lists no rejects output"
        else:
            try:
                sample["columns"], sample["rows"] = rejects_sample(rejects["uri"], settings.console.rejects_sample_rows)
            except ImportError:
                sample["note"] = "the rejected rows need the package pyarrow, which is not installed here"
            except Exception as exc:
                sample["note"] = f"the rejected rows cannot be read: {_one_line(exc)}"
    return {"error": None, "snapshots": rows, "current": current_id, "chosen": chosen, "sample": sample}


# Monitoring --------------------------------------------------------------------------------
def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested figures as (dotted name, scalar) pairs; lists of records are left to the template as tables."""
    if isinstance(value, dict):
        pairs: list[tuple[str, Any]] = []
        for key, item in value.items():
            pairs.extend(flatten(item, f"{prefix}{key}."))
        return pairs
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return [(prefix.rstrip("."), value)]
        return [(prefix.rstrip("."), ", ".join(str(v) for v in value[:20]))]
    return [(prefix.rstrip("."), value)]


def monitoring_page(settings: Settings) -> dict[str, Any]:
    try:
        import monitoring

        latest = monitoring.latest(settings)
    except ImportError:
        return {
            "missing": "the monitoring package is not installed in this API (import monitoring failed): "
            "drift and realized-quality figures appear here once it is"
        }
    except Exception as exc:
        return {"missing": f"the monitoring figures cannot be read: {_one_line(exc)}"}
    if latest is None:
        return {"missing": "no monitoring run yet: run python -m monitoring drift after a feature run"}
    scalars: list[tuple[str, Any]] = []
    tables: list[tuple[str, Any]] = []
    for name, value in flatten(latest):
        (tables if isinstance(value, list) else scalars).append((name, value))
    return {"missing": None, "scalars": scalars, "tables": tables}


def monitoring_report(settings: Settings) -> str:
    import monitoring

    return monitoring.report_html(settings)
