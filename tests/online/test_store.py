"""The shared suite every online-store backend passes (parametrized: sqlite, redis)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from features.contract import FEATURE_COLUMNS
from features.online.base import StoreError, StoreUnavailable
from tests.online.conftest import closed_port, feature_rows

IDS = list(range(5_008_804, 5_008_804 + 3000, 3))  # 1,000 customer ids, 7 digits like the real ones


def as_expected(rows: list[tuple]) -> dict[int, dict]:
    return {row[0]: dict(zip(FEATURE_COLUMNS, row[1:])) for row in rows}


def test_nothing_published_reads_none(store):
    assert store.current_snapshot() is None
    assert store.online_read([IDS[0], 1]) == [None, None]
    assert store.online_read([]) == []


def test_read_returns_what_was_written_with_types_order_and_provenance(store):
    rows = feature_rows(IDS)
    info = store.write_snapshot("20240101T000000Z-aaaaaa", "2024-01-01", [rows[:400], rows[400:]])
    assert (info.run_id, info.as_of, info.rows) == ("20240101T000000Z-aaaaaa", "2024-01-01", len(rows))
    expected = as_expected(rows)
    wanted = [IDS[10], 42, IDS[0], IDS[10], IDS[-1], -5, 2**63 - 1]
    records = store.online_read(wanted)
    assert len(records) == len(wanted)
    for ident, record in zip(wanted, records):
        if ident not in expected:
            assert record is None
            continue
        assert record.id == ident
        assert record.features == expected[ident]
        assert list(record.features) == list(FEATURE_COLUMNS)
        for name, value in record.features.items():
            assert type(value) is type(expected[ident][name]), (name, value)
        assert (record.run_id, record.as_of) == ("20240101T000000Z-aaaaaa", "2024-01-01")
    current = store.current_snapshot()
    assert (current.run_id, current.as_of, current.rows) == (info.run_id, info.as_of, len(rows))


def test_a_whole_batch_read_matches_the_written_rows(store):
    rows = feature_rows(IDS)
    store.write_snapshot("run-a", "2024-01-01", [rows])
    records = store.online_read(IDS)  # more ids than one SQLite statement takes
    assert {r.id: r.features for r in records} == as_expected(rows)


def test_async_read_equals_sync_read(store):
    rows = feature_rows(IDS[:50])
    store.write_snapshot("run-a", "2024-01-01", [rows])
    wanted = [IDS[3], 7, IDS[49]]

    async def both():
        try:
            return await store.online_read_async(wanted), await store.current_snapshot_async()
        finally:
            await store.aclose()

    records, current = asyncio.run(both())
    # Worked out from feature_rows by hand (row i: nb i % 50, avg 1234.5 + i unless i % 5 == 0, age 18 + i % 60,
    # years i % 30 unless i % 7 == 0, car i % 2 unless i % 11 == 0): i = 3 and i = 49; 7 was never written.
    assert [None if r is None else (r.id, r.features, r.run_id, r.as_of) for r in records] == [
        (
            IDS[3],
            {
                "nb_previous_loans": 3,
                "avg_amount_loans_previous": 1237.5,
                "age": 21,
                "years_on_the_job": 3,
                "flag_own_car": 1,
            },
            "run-a",
            "2024-01-01",
        ),
        None,
        (
            IDS[49],
            {
                "nb_previous_loans": 49,
                "avg_amount_loans_previous": 1283.5,
                "age": 67,
                "years_on_the_job": None,
                "flag_own_car": 1,
            },
            "run-a",
            "2024-01-01",
        ),
    ]
    assert (current.run_id, current.as_of, current.rows) == ("run-a", "2024-01-01", 50)
    assert records == store.online_read(wanted)  # and the sync path agrees


def test_a_new_snapshot_replaces_the_old_one_and_its_rows_are_gone(store):
    first = store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS, 1)])
    kept = IDS[: len(IDS) // 2]
    second = store.write_snapshot("run-2", "2024-02-01", [feature_rows(kept, 2)])
    records = store.online_read([IDS[0], IDS[-1]])
    assert records[0].run_id == "run-2" and records[0].as_of == "2024-02-01"
    assert records[0].features["nb_previous_loans"] == 2000
    assert records[1] is None  # absent from the new snapshot: not served from the old one
    assert store.snapshot_states() == {second.namespace: "current"}
    assert store.row_count(first.namespace) == 0
    assert store.row_count(second.namespace) == len(kept)


def test_materializing_the_current_run_again_switches_in_one_step(store):
    first = store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS, 1)])
    again = store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS, 3)])
    assert again.namespace != first.namespace
    assert store.online_read([IDS[0]])[0].features["nb_previous_loans"] == 3000
    assert store.snapshot_states() == {again.namespace: "current"}


def test_a_materialization_that_fails_part_way_changes_nothing(store):
    store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS, 1)])
    before = store.online_read(IDS)

    def batches():
        rows = feature_rows(IDS, 2)
        yield rows[:300]
        yield rows[300:600]
        raise RuntimeError("the reader died")

    with pytest.raises(RuntimeError, match="the reader died"):
        store.write_snapshot("run-2", "2024-02-01", batches())
    assert store.online_read(IDS) == before
    assert store.current_snapshot().run_id == "run-1"
    assert list(store.snapshot_states().values()) == ["current"]  # the partial namespace was discarded


def test_a_killed_materialization_is_invisible_and_swept_later(make_store):
    store = make_store(stale_after_seconds=0)
    store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS, 1)])
    before = store.online_read(IDS[:20])
    # What a process killed between writes leaves: a namespace with rows and no publish.
    orphan = store.begin_snapshot("run-2", "2024-02-01")
    store.online_write_batch(orphan, feature_rows(IDS, 2)[:500])
    assert store.online_read(IDS[:20]) == before
    assert store.snapshot_states()[orphan] == "writing"
    # The next materialization removes it (stale_after_seconds=0: any unpublished namespace is stale).
    third = store.write_snapshot("run-3", "2024-03-01", [feature_rows(IDS, 3)])
    assert store.snapshot_states() == {third.namespace: "current"}
    assert store.row_count(orphan) == 0
    with pytest.raises(StoreError, match="not being written"):
        store.publish(orphan, 500)


def test_a_discarded_namespace_cannot_be_published_and_the_current_one_cannot_be_discarded(store):
    info = store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS[:10])])
    namespace = store.begin_snapshot("run-2", "2024-02-01")
    store.online_write_batch(namespace, feature_rows(IDS[:10], 2))
    store.discard(namespace)
    with pytest.raises(StoreError, match="not being written"):
        store.publish(namespace, 10)
    with pytest.raises(StoreError, match="not being written"):
        store.online_write_batch(namespace, feature_rows(IDS[:10], 2))
    with pytest.raises(StoreError, match="is current"):
        store.discard(info.namespace)
    assert store.current_snapshot().run_id == "run-1"


@pytest.mark.parametrize("run_id", ["", "a b", "x:y", "../up", "star*"])
def test_a_bad_run_id_is_refused(store, run_id):
    with pytest.raises(StoreError, match="is not valid"):
        store.write_snapshot(run_id, "2024-01-01", [feature_rows(IDS[:3])])


def test_readers_during_switches_see_one_whole_snapshot_per_read(store):
    """Reader threads read 200 ids at a time while snapshots are switched; no read mixes two."""
    ids = IDS[:600]
    store.write_snapshot("gen-0", "2024-01-01", [feature_rows(ids, 0)])
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader(offset: int) -> None:
        wanted = ids[offset : offset + 200]
        while not stop.is_set():
            records = store.online_read(wanted)
            reads[0] += 1
            if any(r is None for r in records):
                problems.append("a known id was missing during a switch")
                return
            runs = {r.run_id for r in records}
            if len(runs) != 1:
                problems.append(f"one read mixed snapshots {sorted(runs)}")
                return
            generation = int(runs.pop().split("-")[1])
            if any(r.features["nb_previous_loans"] // 1000 != generation for r in records):
                problems.append(f"values of another snapshot under run gen-{generation}")
                return

    threads = [threading.Thread(target=reader, args=(offset,)) for offset in (0, 200, 400)]
    for thread in threads:
        thread.start()
    try:
        for generation in range(1, 9):
            store.write_snapshot(
                f"gen-{generation}",
                "2024-01-01",
                [feature_rows(ids, generation)[i : i + 100] for i in range(0, 600, 100)],
            )
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not problems, problems[0]
    assert reads[0] > 20
    assert store.current_snapshot().run_id == "gen-8"


def test_teardown_removes_everything(make_store):
    store = make_store()
    store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS[:10])])
    store.teardown()
    assert store.current_snapshot() is None
    assert store.snapshot_states() == {}


def test_an_unreachable_backend_is_store_unavailable(backend, tmp_path):
    from features.online import open_store

    if backend == "sqlite":
        from features.online.sqlite_store import SqliteStoreConfig

        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the store's folder should be")
        store = open_store(config=SqliteStoreConfig(path=blocker / "features.sqlite"))
    else:
        from features.online.redis_store import RedisStoreConfig

        store = open_store(config=RedisStoreConfig(url=f"redis://127.0.0.1:{closed_port()}/15", timeout_seconds=0.5))
    for call in (store.ping, store.current_snapshot, lambda: store.online_read([1])):
        with pytest.raises(StoreUnavailable):
            call()
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.online_read_async([1]))
    with pytest.raises(StoreUnavailable):
        store.write_snapshot("run-1", "2024-01-01", [feature_rows(IDS[:3])])


@pytest.mark.parametrize("prefix, fields", [("p'x", ["id"]), ("p", ["id", "a') .. redis.call('FLUSHALL') .. ('"])])
def test_the_redis_read_script_takes_no_name_that_could_end_its_lua_strings(prefix, fields):
    from features.online.redis_store import read_script

    assert "'p'" in read_script("p", ["id", "age"]) and "'age'" in read_script("p", ["id", "age"])
    with pytest.raises(StoreError, match="cannot be a key prefix or a field name"):
        read_script(prefix, fields)
