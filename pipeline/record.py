"""The run record: `<state_dir>/pipeline/runs/<KEY>.json`, one per run key, the outputs of each step.

A step reads its inputs from the outputs its predecessors left here, so the steps can run in
one process (`python -m pipeline run`) or one per task (the Airflow DAG's `python -m
pipeline step STEP --run-key KEY`) with the same result. Every change replaces the file
atomically (configuration.files.write_atomic): a reader never sees half a record, and a
step killed halfway leaves the record as it was before it started.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from configuration.files import write_atomic

KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def runs_dir(settings) -> Path:
    return Path(settings.paths.state_dir) / "pipeline" / "runs"


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise UserError(
            f"run key {key!r} is not usable as a file name: use letters, digits and . _ - : + (at most 128)"
        )
    return key


@dataclass
class RunRecord:
    key: str
    path: Path
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: str | None = None

    @classmethod
    def open(cls, settings, key: str) -> "RunRecord":
        """The record of `key`, or a new empty one (written at the first step)."""
        path = runs_dir(settings) / f"{check_key(key)}.json"
        if not path.is_file():
            return cls(key=key, path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                key=key,
                path=path,
                created_at=data["created_at"],
                updated_at=data["updated_at"],
                steps=dict(data["steps"]),
                summary=data.get("summary"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"the run record {path} is damaged ({exc}): delete it to start run {key} again") from None

    def save(self) -> None:
        self.updated_at = now()
        body = {
            "key": self.key,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "summary": self.summary,
            "steps": self.steps,
        }
        write_atomic(self.path, json.dumps(body, indent=2, default=str) + "\n")

    def output(self, step: str) -> dict[str, Any] | None:
        entry = self.steps.get(step)
        return entry["output"] if entry and entry.get("status") == "ok" else None

    def set(self, step: str, entry: dict[str, Any]) -> None:
        self.steps[step] = entry
        self.save()

    def drop(self, steps: list[str]) -> None:
        """Forget later steps' outputs: they were made from an output that has just changed."""
        if any(self.steps.pop(name, None) is not None for name in steps):
            self.save()


def recent(settings, limit: int = 20) -> list[dict[str, Any]]:
    """The newest run records first (by last change)."""
    folder = runs_dir(settings)
    records = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            records.append({"key": path.stem, "updated_at": "?", "summary": "(damaged record)", "steps": {}})
    records.sort(key=lambda r: str(r.get("updated_at", "")), reverse=True)
    return records[:limit]
