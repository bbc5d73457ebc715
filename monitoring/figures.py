"""The latest monitoring figures: one small JSON file the API's /metrics and the console read cheaply.

    <lake>/<dataset>/monitoring/latest.json

Written (atomically) by the drift step as its last act, after the Parquet results and the
Hive tables; it holds the snapshot's drift rows (without histograms), the prediction drift
and the realized quality per model version. Standard library only: the API image imports it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from configuration.settings import Settings
from features import lake

FILE = "latest.json"


def monitoring_uri(settings: Settings) -> str:
    return lake.join(lake.dataset_uri(settings), "monitoring")


def latest_uri(settings: Settings) -> str:
    return lake.join(monitoring_uri(settings), FILE)


def _finite(value):
    """NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_latest(settings: Settings, figures: dict, spark=None) -> None:
    uri = latest_uri(settings)
    lake.lake_for(uri, spark).write_text_atomic(uri, json.dumps(_finite(figures), indent=2, allow_nan=False))


def read_latest(settings: Settings) -> dict | None:
    """The latest figures, or None when no drift step ran yet (or the lake is not local)."""
    uri = latest_uri(settings)
    if not lake.is_local(uri):
        return None
    try:
        return json.loads(lake.local_path(uri).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class LatestFigures:
    """Reads latest.json again only when the file changed (its mtime and size), so a scrape costs one stat()."""

    def __init__(self, settings: Settings) -> None:
        uri = latest_uri(settings)
        self.path = lake.local_path(uri) if lake.is_local(uri) else None
        self._stamp: tuple[int, int] | None = None
        self._figures: dict | None = None

    def get(self) -> dict | None:
        if self.path is None:
            return None
        try:
            info = self.path.stat()
        except OSError:
            self._stamp, self._figures = None, None
            return None
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                self._figures = json.loads(Path(self.path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._figures = None
            self._stamp = stamp
        return self._figures
