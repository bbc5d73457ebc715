"""The online feature store: the latest-features snapshot keyed by customer id, read by the API.

    store = open_store(settings)               # the backend settings.online_store.kind names
    store.online_read([5008804, 1])            # [FeatureRecord(...), None]
    materialize(settings)                      # features.online.materialize: current snapshot -> store

Backends: `SqliteOnlineStore` (the embedded default, a file under the lake) and
`RedisOnlineStore`; the interface and its guarantees are in `features.online.base`.
"""

from __future__ import annotations

from configuration.settings import Settings
from features.online.base import (
    FeatureRecord,
    MissingDependency,
    OnlineStore,
    SnapshotInfo,
    StoreError,
    StoreUnavailable,
)

__all__ = [
    "FeatureRecord",
    "MissingDependency",
    "OnlineStore",
    "SnapshotInfo",
    "StoreError",
    "StoreUnavailable",
    "open_store",
    "store_config",
]


def store_config(settings: Settings):
    """The backend config model built from the settings (SqliteStoreConfig or RedisStoreConfig)."""
    section = settings.online_store
    if section.kind == "redis":
        from features.online.redis_store import RedisStoreConfig

        return RedisStoreConfig(
            url=section.redis_url, key_prefix=section.key_prefix, timeout_seconds=section.timeout_seconds
        )
    from features.online.sqlite_store import SqliteStoreConfig

    return SqliteStoreConfig(path=settings.online_sqlite_path(), timeout_seconds=section.timeout_seconds)


def open_store(settings: Settings | None = None, config=None) -> OnlineStore:
    """The configured backend; nothing is connected until its first call."""
    if config is None:
        if settings is None:
            raise TypeError("open_store needs the settings or a store config")
        config = store_config(settings)
    if config.type == "redis":
        from features.online.redis_store import RedisOnlineStore

        return RedisOnlineStore(config)
    from features.online.sqlite_store import SqliteOnlineStore

    return SqliteOnlineStore(config)
