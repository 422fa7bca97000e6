"""The table store that loads newly assigned changelog partitions in bulk (ChangelogLoadedStore):
what it loads, what it leaves to Faust's recovery, and where that recovery goes on from."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import faust
import orjson
import pytest
from faust.types import TP

from streams.runtime import changelog_store
from streams.runtime.faust_private import bulk_recovered, with_serializers
from streams.runtime.tables import ColdSku

CHANGELOG = "canary-skus-changelog"


class Reads:
    """read_changelog as the broker would answer it: per partition, the last value of each key,
    the keys deleted last, the watermark minus one; and what was asked."""

    def __init__(self, records: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        self.records = records
        self.asked: list[tuple[str, list[int]]] = []

    def __call__(
        self, config: Any, topic: str, partitions: Any, decode_key: Any, decode_value: Any
    ) -> Any:
        partitions = list(partitions)
        self.asked.append((topic, partitions))
        values: dict[int, dict[Any, Any]] = {}
        deleted: dict[int, set[Any]] = {}
        resume: dict[int, int] = {}
        for p in partitions:
            values[p], deleted[p] = {}, set()
            for key, raw in self.records.get(p, []):
                if raw is None:
                    values[p].pop(decode_key(key), None)
                    deleted[p].add(decode_key(key))
                else:
                    deleted[p].discard(decode_key(key))
                    values[p][decode_key(key)] = decode_value(raw)
            if self.records.get(p):
                resume[p] = len(self.records[p]) - 1
        return values, deleted, resume


def sku_record(sku: str) -> bytes:
    from streams.core.state import SkuState

    return orjson.dumps(SkuState(sku).to_dict())


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Any:
    app = faust.App("canary", broker="kafka://127.0.0.1:1", topic_partitions=2)
    t = app.Table("skus", default=None, partitions=2, key_type=bytes)
    with_serializers(t, "raw", "sku-state")
    bulk_recovered(t, {"bootstrap.servers": "127.0.0.1:1"})
    return t


async def test_newly_assigned_partitions_are_loaded_with_the_tables_codec_and_recovery_resumes(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(
        {
            0: [(b"A", sku_record("A")), (b"B", sku_record("B")), (b"B", None)],
            1: [(b"C", sku_record("C"))],
        }
    )
    monkeypatch.setattr(changelog_store, "read_changelog", reads)
    store = table.data
    store.data[b"B"] = "held before the restart"  # deleted last on its changelog: goes
    assigned = {TP(CHANGELOG, 0), TP(CHANGELOG, 1), TP("inventory.events", 0)}
    await store.on_rebalance(assigned, set(), assigned)
    resume = await store.loaded()
    assert reads.asked == [(CHANGELOG, [0, 1])]  # one read, of the changelog's partitions only
    assert sorted(store.data) == [b"A", b"C"]
    assert isinstance(store.data[b"A"], ColdSku)  # decoded as the sku-state codec decodes
    assert resume == {TP(CHANGELOG, 0): 2, TP(CHANGELOG, 1): 0}
    # Faust's memory store drops, after a recovery, the keys of partitions no longer assigned
    await store.on_recovery_completed({TP(CHANGELOG, 1)}, set())
    assert sorted(store.data) == [b"C"]


async def test_the_rebalance_callback_does_not_wait_for_the_load(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka sends no heartbeat until the rebalance callback returns: a load inside it longer
    than the session timeout (6 s; 1M positions take 7.4 s) has the group drop the worker."""
    release = threading.Event()
    reads = Reads({0: [(b"A", sku_record("A"))]})

    def slow(*args: Any) -> Any:
        assert release.wait(10)
        return reads(*args)

    monkeypatch.setattr(changelog_store, "read_changelog", slow)
    store = table.data
    await asyncio.wait_for(store.on_rebalance({TP(CHANGELOG, 0)}, set(), set()), 1.0)
    waiting = asyncio.ensure_future(store.loaded())
    await asyncio.sleep(0.05)
    assert not waiting.done() and store.data == {}  # recovery waits for the load
    release.set()
    assert await asyncio.wait_for(waiting, 5.0) == {TP(CHANGELOG, 0): 0}
    assert sorted(store.data) == [b"A"]


async def test_a_partition_revoked_while_it_loads_is_not_applied(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    reads = Reads({0: [(b"A", sku_record("A"))], 1: [(b"C", sku_record("C"))]})

    def slow(*args: Any) -> Any:
        assert release.wait(10)
        return reads(*args)

    monkeypatch.setattr(changelog_store, "read_changelog", slow)
    store = table.data
    both = {TP(CHANGELOG, 0), TP(CHANGELOG, 1)}
    await store.on_rebalance(both, set(), both)
    await store.on_rebalance({TP(CHANGELOG, 0)}, {TP(CHANGELOG, 1)}, set())
    release.set()
    assert await asyncio.wait_for(store.loaded(), 5.0) == {TP(CHANGELOG, 0): 0}
    assert sorted(store.data) == [b"A"]


async def test_a_partition_kept_across_a_rebalance_is_not_read_again_one_given_back_is(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads({0: [(b"A", sku_record("A"))], 1: [(b"C", sku_record("C"))]})
    monkeypatch.setattr(changelog_store, "read_changelog", reads)
    store = table.data
    both = {TP(CHANGELOG, 0), TP(CHANGELOG, 1)}
    await store.on_rebalance(both, set(), both)
    await store.loaded()
    # partition 1 goes to another worker: partition 0, kept, is Faust's to bring up to date
    await store.on_rebalance({TP(CHANGELOG, 0)}, {TP(CHANGELOG, 1)}, set())
    assert await store.loaded() == {}
    assert reads.asked == [(CHANGELOG, [0, 1])]
    # and it comes back: what this worker held of it may be stale, so it is read whole again
    await store.on_rebalance(both, set(), {TP(CHANGELOG, 1)})
    assert await store.loaded() == {TP(CHANGELOG, 1): 0}
    assert reads.asked == [(CHANGELOG, [0, 1]), (CHANGELOG, [1])]


async def test_an_empty_changelog_partition_leaves_recovery_where_faust_starts_it(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads({})
    monkeypatch.setattr(changelog_store, "read_changelog", reads)
    store = table.data
    await store.on_rebalance({TP(CHANGELOG, 0)}, set(), {TP(CHANGELOG, 0)})
    assert await store.loaded() == {} and store.data == {}


async def test_faust_recovery_starts_a_loaded_partition_where_its_load_ended(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recover_after_bulk_loads: the offsets Faust's recovery starts from, for the loaded
    partitions, once the load is done; never past the highwater Faust read."""
    from collections import Counter

    from faust.tables.recovery import Recovery

    from streams.runtime.faust_private import recover_after_bulk_loads

    monkeypatch.setattr(Recovery, "_build_offsets", Recovery._build_offsets)  # undone after
    recover_after_bulk_loads()
    reads = Reads({0: [(b"A", sku_record("A"))] * 8, 1: [(b"C", sku_record("C"))] * 3})
    monkeypatch.setattr(changelog_store, "read_changelog", reads)
    both = {TP(CHANGELOG, 0), TP(CHANGELOG, 1)}
    await table.data.on_rebalance(both, set(), both)

    class Consumer:
        async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
            return dict.fromkeys(tps, 0)

    recovery = table.app.tables.recovery
    recovery.active_highwaters = Counter({TP(CHANGELOG, 0): 7, TP(CHANGELOG, 1): 1})
    offsets: Counter[TP] = Counter({TP(CHANGELOG, 0): None, TP(CHANGELOG, 1): None})
    await recovery._build_offsets(Consumer(), both, offsets, "active")
    assert offsets == {TP(CHANGELOG, 0): 7, TP(CHANGELOG, 1): 1}  # 7 loaded; 2, past 1


async def test_a_load_that_fails_leaves_the_partitions_to_faust(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: Any) -> Any:
        raise TimeoutError("canary-skus-changelog: partitions [0] not read to their end")

    monkeypatch.setattr(changelog_store, "read_changelog", unreachable)
    store = table.data
    await store.on_rebalance({TP(CHANGELOG, 0)}, set(), {TP(CHANGELOG, 0)})
    assert await store.loaded() == {} and store.data == {}  # Faust reads it from its start
    # and the next rebalance tries again
    reads = Reads({0: [(b"A", sku_record("A"))]})
    monkeypatch.setattr(changelog_store, "read_changelog", reads)
    await store.on_rebalance({TP(CHANGELOG, 0)}, set(), set())
    assert await store.loaded() == {TP(CHANGELOG, 0): 0}


async def test_the_heap_a_load_freed_is_given_back_once_it_is_applied(
    table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load's transient records and dicts are freed when it is applied; glibc keeps such
    memory unless asked (a restart at 1M positions held ~80 MB more than the data)."""
    monkeypatch.setattr(changelog_store, "read_changelog", Reads({0: [(b"A", sku_record("A"))]}))
    store = table.data
    trims: list[list[bytes]] = []
    monkeypatch.setattr(changelog_store, "trim_heap", lambda: trims.append(sorted(store.data)))
    await store.on_rebalance({TP(CHANGELOG, 0)}, set(), {TP(CHANGELOG, 0)})
    await store.loaded()
    assert trims == [[b"A"]]  # once, with the load applied
