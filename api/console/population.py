"""Where a customer's features stand in the population: percentiles within the snapshot's latest table.

The distribution is read once per snapshot (the five feature columns of `latest/`, with
pyarrow) and kept sorted in memory, so a lookup is a binary search per feature; a new
snapshot (another run id on the scored record) replaces it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from configuration.errors import UserError
from configuration.settings import Settings
from features import lake
from features.contract import FEATURE_COLUMNS


@dataclass(frozen=True)
class Standing:
    percentile: float  # share of the population below, counting ties as half, in percent
    median: float
    rows: int  # customers with a known value


class Population:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._run_id: str | None = None
        self._sorted: dict[str, np.ndarray] = {}
        self.loads = 0  # how many times a distribution was read (tests check it is once per snapshot)

    def _latest_uri(self, run_id: str) -> str:
        try:
            return str(lake.read_manifest(self.settings, run_id)["outputs"]["latest"]["uri"])
        except (UserError, KeyError, TypeError, OSError, ValueError):
            return lake.join(lake.snapshot_uri(self.settings, run_id), "latest")

    def _load(self, run_id: str) -> dict[str, np.ndarray]:
        import pyarrow.dataset as ds

        uri = self._latest_uri(run_id)
        if not lake.is_local(uri):
            raise UserError(f"the latest table {uri} is not on a local lake: the console reads local lakes only")
        table = ds.dataset(str(lake.local_path(uri)), format="parquet").to_table(columns=list(FEATURE_COLUMNS))
        columns = {}
        for name in FEATURE_COLUMNS:
            values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            columns[name] = np.sort(values[~np.isnan(values)])
        return columns

    def distribution(self, run_id: str) -> dict[str, np.ndarray]:
        with self._lock:
            if self._run_id != run_id:
                self._sorted = self._load(run_id)
                self._run_id = run_id
                self.loads += 1
            return self._sorted

    def standing(self, run_id: str, features: dict[str, Any]) -> dict[str, Standing | None]:
        """Each feature's percentile in the snapshot (None for a missing value or an empty column)."""
        columns = self.distribution(run_id)
        result: dict[str, Standing | None] = {}
        for name in FEATURE_COLUMNS:
            value, values = features.get(name), columns[name]
            if value is None or not len(values):
                result[name] = None
                continue
            below = np.searchsorted(values, value, side="left")
            through = np.searchsorted(values, value, side="right")
            result[name] = Standing(
                100.0 * (below + (through - below) / 2) / len(values), float(np.median(values)), len(values)
            )
        return result
