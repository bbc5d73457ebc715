"""The online store's interface: what materialization writes and what the API reads.

Shaped like Feast's online stores (`online_write_batch`, `online_read`, `teardown`), with
the snapshot switch made explicit, because a reader must never see a mix of two snapshots:

    begin_snapshot(run_id, as_of) -> namespace    a fresh, invisible place for the rows
    online_write_batch(namespace, rows)           as many batches as needed (still invisible)
    publish(namespace, rows)                      the one step readers notice; the old rows go
    discard(namespace)                            give up a snapshot that was not published

`write_snapshot` strings these together. Every materialization gets a namespace of its own
(`<run_id>@<random>`), even for a run that is already current, so re-materializing the
current snapshot also switches in one step, and the rows of a materialization that died
part-way are never read: no pointer names them (`begin_snapshot` sweeps them later).

Guarantees every backend keeps (the shared suite in tests/online checks them):
- `online_read(ids)` returns one entry per id, in order, `None` for an id the current
  snapshot lacks; every record carries the `run_id` and `as_of` of the snapshot it came
  from, and all records of one call come from the same snapshot;
- values come back with the type they were written with (int, float or None);
- a backend that cannot be reached raises `StoreUnavailable`, whatever the library.
"""

from __future__ import annotations

import abc
import datetime as dt
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from configuration.errors import UserError
from features.contract import FEATURE_COLUMNS

Value = int | float | None
Row = Sequence[Any]  # (id, *features in FEATURE_COLUMNS order)

_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class StoreError(UserError):
    """The online store refused an operation (bad state, bad input); the message says what to do."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached or does not answer in time."""


class MissingDependency(StoreError):
    """An optional library a backend needs is not installed."""


@dataclass(frozen=True, slots=True)
class FeatureRecord:
    id: int
    features: dict[str, Value]  # FEATURE_COLUMNS order, values as written
    run_id: str
    as_of: str  # ISO date of the snapshot


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    run_id: str
    as_of: str
    rows: int
    namespace: str
    published_at: str


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise StoreError(
            f"run id {run_id!r} is not valid: letters, digits, '_', '.', '-' only (as the feature job makes them)"
        )
    return run_id


def new_namespace(run_id: str) -> str:
    return f"{check_run_id(run_id)}@{secrets.token_hex(4)}"


def require(module: str, backend: str, package: str):
    """Import an optional backend library, or say by name what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(
            f"the {backend} online store needs the Python package {package!r}, which is not installed: "
            f"pip install {package} (it is pinned in requirements.txt)"
        ) from None


class OnlineStore(abc.ABC):
    """One backend of the online feature store. Connections are opened on first use."""

    kind: str = "abstract"
    features: tuple[str, ...] = FEATURE_COLUMNS

    # Writing ----------------------------------------------------------------------------
    @abc.abstractmethod
    def begin_snapshot(self, run_id: str, as_of: str) -> str:
        """Register a new, invisible snapshot of `run_id`; return its namespace.

        Also removes what earlier materializations that died part-way left behind.
        """

    @abc.abstractmethod
    def online_write_batch(self, namespace: str, rows: Sequence[Row]) -> None:
        """Write rows `(id, *features)` into a namespace from `begin_snapshot` (invisible until publish)."""

    @abc.abstractmethod
    def publish(self, namespace: str, rows: int) -> SnapshotInfo:
        """Make the namespace the current snapshot in one step, then drop the previous one."""

    @abc.abstractmethod
    def discard(self, namespace: str) -> None:
        """Remove an unpublished namespace and its rows."""

    def write_snapshot(self, run_id: str, as_of: str, batches: Iterable[Sequence[Row]]) -> SnapshotInfo:
        """Write every batch under a fresh namespace and publish it; on any failure nothing changes."""
        namespace = self.begin_snapshot(run_id, as_of)
        count = 0
        try:
            for batch in batches:
                if batch:
                    self.online_write_batch(namespace, batch)
                    count += len(batch)
            return self.publish(namespace, count)
        except BaseException:
            try:
                self.discard(namespace)
            except Exception:  # the backend may be what failed; the leftovers are invisible and swept later
                pass
            raise

    # Reading ----------------------------------------------------------------------------
    @abc.abstractmethod
    def online_read(self, ids: Sequence[int]) -> list[FeatureRecord | None]:
        """One entry per id, in order: the current snapshot's record, or None when it lacks the id."""

    async def online_read_async(self, ids: Sequence[int]) -> list[FeatureRecord | None]:
        """The same, for an event loop (default: the blocking call on a worker thread)."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.online_read, list(ids))

    @abc.abstractmethod
    def current_snapshot(self) -> SnapshotInfo | None:
        """The current snapshot, or None before the first publish."""

    async def current_snapshot_async(self) -> SnapshotInfo | None:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.current_snapshot)

    # Operations -------------------------------------------------------------------------
    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""

    async def ping_async(self) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.ping)

    @abc.abstractmethod
    def snapshot_states(self) -> dict[str, str]:
        """namespace -> state ("writing", "current", "retired") of every snapshot the store records."""

    @abc.abstractmethod
    def row_count(self, namespace: str) -> int:
        """Rows stored under one namespace (for checks after a materialization and for tests)."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Remove everything this store wrote (tables, keys)."""

    def close(self) -> None:
        """Release connections (a later call opens them again)."""

    async def aclose(self) -> None:
        self.close()

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the store is, for messages (no secrets)."""
