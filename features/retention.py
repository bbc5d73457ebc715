"""Which feature snapshots a local lake holds, and which of them can go.

Every run writes a new `snapshots/<run_id>/` and none is ever deleted by the job, so a
lake grows by one snapshot a run. Pruning keeps:
- the current snapshot (CURRENT.json, which the Hive tables point at);
- the newest `keep` complete snapshots (a rollback target, a comparison);
- every snapshot a registered model was trained on (the model's lineage: retraining or
  auditing it needs that exact data);
- a folder without a manifest younger than `stale_after` (a run still writing it).
Older folders without a manifest are what killed runs left behind, and go too.

Local lakes only: a remote lake's old objects are better expired by the store's own
lifecycle rules (S3 lifecycle, HDFS snapshots), which this module does not reach.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError
from configuration.settings import Settings
from features import lake

STALE_AFTER_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Snapshot:
    run_id: str
    path: Path
    as_of: str | None  # None: no manifest (a run in progress, or one that died)
    rows: dict[str, int]
    size_bytes: int
    modified: float  # seconds since the epoch, of the folder

    @property
    def complete(self) -> bool:
        return self.as_of is not None


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_snapshots(settings: Settings) -> list[Snapshot]:
    """Every snapshot folder of the dataset, newest first (run ids start with their UTC time)."""
    root = lake.snapshot_uri(settings, "")
    if not lake.is_local(root):
        raise UserError(
            f"the lake {settings.paths.lake} is not local: list and expire its snapshots with the store's own tools "
            "(e.g. an S3 lifecycle rule on snapshots/)"
        )
    folder = lake.local_path(root)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if not path.is_dir():
            continue
        manifest = path / "manifest.json"
        as_of, rows = None, {}
        if manifest.is_file():
            try:
                document = json.loads(manifest.read_text(encoding="utf-8"))
                as_of = str(document["as_of"])
                rows = {name: int(o["rows"]) for name, o in document.get("outputs", {}).items()}
            except (OSError, ValueError, KeyError, TypeError):
                as_of = None  # unreadable: treated like an unfinished run
        found.append(Snapshot(path.name, path, as_of, rows, _size(path), path.stat().st_mtime))
    return sorted(found, key=lambda s: s.run_id, reverse=True)


def models_by_snapshot(settings: Settings) -> dict[str, list[str]]:
    """run_id -> the registered model versions trained on it."""
    from training.registry import open_registry

    used: dict[str, list[str]] = {}
    for version in open_registry(settings).versions():
        if version.run_id:
            used.setdefault(version.run_id, []).append(version.version)
    return used


def reasons_to_keep(
    snapshots: list[Snapshot], keep: int, current: str | None, models: dict[str, list[str]], now: float
) -> dict[str, str]:
    """run_id -> why it stays, for every snapshot that stays; the others can be deleted."""
    if keep < 0:
        raise UserError(f"--keep {keep}: give 0 or more snapshots to keep besides the current one")
    reasons: dict[str, str] = {}
    newest_complete = [s.run_id for s in snapshots if s.complete][:keep]
    for snapshot in snapshots:
        why = []
        if snapshot.run_id == current:
            why.append("current")
        if snapshot.run_id in newest_complete:
            why.append(f"among the newest {keep}")
        if snapshot.run_id in models:
            why.append("trained model " + ", ".join(f"v{v}" for v in models[snapshot.run_id]))
        if not snapshot.complete and now - snapshot.modified < STALE_AFTER_SECONDS:
            why.append("no manifest yet: a run may still be writing it")
        if why:
            reasons[snapshot.run_id] = "; ".join(why)
    return reasons


def delete(snapshot: Snapshot) -> None:
    shutil.rmtree(snapshot.path)


def describe(snapshots: list[Snapshot], reasons: dict[str, str]) -> list[str]:
    """One line a snapshot: run id, as-of date, rows, size, and why it stays (or that it can go)."""
    lines = []
    for s in snapshots:
        rows = ", ".join(f"{name} {count:,}" for name, count in s.rows.items()) or "-"
        fate = reasons.get(s.run_id, "can be deleted")
        lines.append(
            f"{s.run_id}  as of {s.as_of or '(no manifest)'}  {s.size_bytes / 1e6:,.1f} MB  rows: {rows}  [{fate}]"
        )
    return lines


def prune(settings: Settings, keep: int, apply: bool, now: float | None = None) -> tuple[list[str], list[Snapshot]]:
    """Report lines and the snapshots deleted (or that would be, when not `apply`)."""
    # Under the dataset's lock: no run publishes (and moves CURRENT) while the choice is made.
    # (A remote lake has no lock; list_snapshots refuses it.)
    with lake.exclusive(settings, "a snapshot prune") if apply else contextlib.nullcontext():
        snapshots = list_snapshots(settings)
        current = lake.read_current(settings)
        reasons = reasons_to_keep(
            snapshots, keep, current["run_id"] if current else None, models_by_snapshot(settings), now or time.time()
        )
        doomed = [s for s in snapshots if s.run_id not in reasons]
        if apply:
            for done, snapshot in enumerate(doomed):
                try:
                    delete(snapshot)
                except OSError as exc:
                    raise UserError(
                        f"cannot delete {snapshot.path} ({exc.strerror}) after deleting {done} snapshot(s): "
                        "check its permissions and run the prune again"
                    ) from None
    return describe(snapshots, reasons), doomed
