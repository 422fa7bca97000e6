"""Hot and wide SKUs across a SIGKILL (a launch: thousands of open order lines on one SKU; a
chain: one SKU at 60 stores): their records go to the changelogs in bounded records, come back
whole, and `explain` reads them whole."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.api import ChangelogReader
from streams.core.explain import Explanation, explain
from streams.core.state import join_parts, part_key
from streams.runtime.offsets import true_end_offsets
from streams.runtime.topics import changelog_topic, partition_for
from streams.simulate import read_catalog, run, simulate
from streams.tools import explain_live
from tests.integration.live import LiveSystem

pytestmark = pytest.mark.integration

CATALOG = """\
locations: [{id: wh}]
channels:
  - {id: web, type: shopify, locations: [wh], allocation_percent: 100, buffer_units: 0}
listings:
  - {channel: web, channel_sku: LAUNCH, components: [{sku: LAUNCH, quantity: 1}]}
"""


def order(i: int) -> str:
    minute, second = divmod(i, 60)
    return json.dumps(
        {
            "event_id": f"o{i}",
            "type": "order-created",
            "occurred_at": f"2026-11-01T{10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}Z",
            "source": "web",
            "order_id": f"order-{i:05d}",
            "channel": "web",
            "lines": [{"line_id": "1", "sku": "LAUNCH", "quantity": 1, "location": "wh"}],
        }
    )


def cancel(i: int) -> str:
    return json.dumps(
        {
            "event_id": f"c{i}",
            "type": "order-cancelled",
            "occurred_at": "2026-11-01T12:00:00Z",
            "source": "web",
            "order_id": f"order-{i:05d}",
        }
    )


def test_a_hot_skus_open_lines_survive_a_kill_in_bounded_records(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    catalog = read_catalog(tmp_path / "catalog.yaml")
    count = json.dumps(
        {
            "event_id": "n1",
            "type": "stock-adjusted",
            "occurred_at": "2026-11-01T09:00:00Z",
            "source": "wms",
            "sku": "LAUNCH",
            "location": "wh",
            "mode": "count",
            "quantity": 1_000_000,
        }
    )
    first = [count, *(order(i) for i in range(3_000))]
    # after the kill: more orders, and cancels of lines only the recovered parts know
    second = [*(order(i) for i in range(3_000, 3_500)), *(cancel(i) for i in range(0, 3_000, 7))]
    (tmp_path / "all.jsonl").write_text("\n".join(first + second) + "\n")
    with LiveSystem(catalog, tmp_path) as live:
        expected, view = across_a_kill(live, tmp_path, first, second)
        assert view["positions"] == expected["positions"]
        assert [p["committed"] for p in view["positions"]] == [3_500 - 429]
        # every changelog record of the SKU stays far under Kafka's 1 MB (one record: ~160 KB)
        sizes = changelog_sizes(live)
        assert sizes and max(sizes) < 64_000, max(sizes)
        # explain reads the SKU whole: every open line behind `committed`
        with open(tmp_path / "all.jsonl", "rb") as handle:
            engine, _, _ = run(catalog, handle)
        clock = engine.stream_time.date()
        explained_live(live, "LAUNCH", explain(catalog, engine.skus, "web", "LAUNCH", clock), clock)


def sale(i: int) -> str:
    """A POS sale of one unit: a delta, its id kept in the SKU's delta log for dedupe."""
    minute, second = divmod(i, 60)
    return json.dumps(
        {
            "event_id": f"pos-{i}",
            "type": "stock-adjusted",
            "occurred_at": f"2026-11-02T{minute // 60:02d}:{minute % 60:02d}:{second:02d}Z",
            "source": "pos",
            "sku": "LAUNCH",
            "location": "wh",
            "mode": "delta",
            "quantity": -1,
        }
    )


def test_a_best_sellers_delta_ids_survive_a_kill_in_bounded_records(tmp_path: Path) -> None:
    """A best seller: thousands of sales between two counts, each a delta id the SKU keeps for
    dedupe (in one record they passed 64 KB at ~2,000 sales and Kafka's 1 MB at ~20,000).
    Across a kill, a sale sent again is recognised from the parts, and the count after it
    keeps the later sales on top."""
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    catalog = read_catalog(tmp_path / "catalog.yaml")
    count = json.dumps(
        {
            "event_id": "n1",
            "type": "stock-adjusted",
            "occurred_at": "2026-11-01T09:00:00Z",
            "source": "wms",
            "sku": "LAUNCH",
            "location": "wh",
            "mode": "count",
            "quantity": 100_000,
        }
    )
    recount = json.loads(count) | {"event_id": "n2", "occurred_at": "2026-11-02T01:00:00Z"}
    first = [count, *(sale(i) for i in range(4_000))]
    # after the kill: sales sent again (a POS retrying), new ones, and a count they straddle
    second = [
        *(sale(i) for i in range(0, 4_000, 3)),
        *(sale(i) for i in range(4_000, 5_000)),
        json.dumps(recount | {"quantity": 90_000}),
    ]
    with LiveSystem(catalog, tmp_path) as live:
        expected, view = across_a_kill(live, tmp_path, first, second)
        assert view["positions"] == expected["positions"]
        # the 1,399 sales after 01:00 stay on top of the count; none sent again counted twice
        assert [p["on_hand"] for p in view["positions"]] == [90_000 - 1_399]
        sizes = changelog_sizes(live)
        assert sizes and max(sizes) < 64_000, max(sizes)


def across_a_kill(
    live: LiveSystem, tmp_path: Path, first: list[str], second: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`first` published and applied, a commit, the worker SIGKILLed and started again, then
    `second`: what simulate gives for both, and the live view once it is that (or time is up)."""
    (tmp_path / "first.jsonl").write_text("\n".join(first) + "\n")
    (tmp_path / "second.jsonl").write_text("\n".join(second) + "\n")
    live.start_worker(0)
    live.publish(tmp_path / "first.jsonl")
    live.wait_for(simulate(live.catalog, first), timeout=120)
    time.sleep(1.0)  # a commit: the changelog holds what `first` made
    live.kill_worker(0)
    live.start_worker(0)
    live.publish(tmp_path / "second.jsonl")
    expected = simulate(live.catalog, first + second)
    return expected, live.wait_for(expected, timeout=120)


def explained_live(live: LiveSystem, channel_sku: str, expected: Explanation, clock: date) -> None:
    """`explain` of the `web` listing from the SKU states the workers committed is `expected`
    (simulate's), within 30 s (a commit may still be on its way)."""
    deadline = time.monotonic() + 30
    while True:
        got = explain_live(live.catalog, "web", channel_sku, live.settings, live.bootstrap, clock)
        if got[0] == expected:
            return
        assert time.monotonic() < deadline, got[0].to_text()[-2000:]
        time.sleep(0.5)


def changelog_sizes(live: LiveSystem) -> list[int]:
    """The size of every record of the SKU tables' changelogs (records and parts)."""
    return [
        len(value)
        for table in ("skus", "sku_parts")
        for value in raw_values(live, changelog_topic(live.settings.app_id, table))
    ]


def raw_values(live: LiveSystem, topic: str) -> list[bytes]:
    """Every value on `topic`, as the broker holds it (tombstones left out)."""
    partitions = list(range(live.settings.topic_partitions))
    ends = true_end_offsets(live.bootstrap, topic, partitions)
    consumer = Consumer({"bootstrap.servers": live.bootstrap, "group.id": "hot-sku-sizes"})
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p] > 0])
    values: list[bytes] = []
    todo = {p for p in partitions if ends[p] > 0}
    deadline = time.monotonic() + 30
    try:
        while todo:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            if message.value() is not None:
                values.append(message.value())
            if message.offset() + 1 >= ends[message.partition()]:
                todo.discard(message.partition())
    finally:
        consumer.close()
    return values


STORES = [f"store-{i:03d}" for i in range(60)]
CHAIN_CATALOG = (
    f"locations: [{', '.join('{id: ' + s + '}' for s in STORES)}]\n"
    "channels:\n"
    f"  - {{id: web, type: shopify, locations: [{', '.join(STORES)}], allocation_percent: 80}}\n"
    "listings:\n"
    "  - {channel: web, channel_sku: CHAIN, components: [{sku: CHAIN, quantity: 1}]}\n"
)


def stock_event(event_id: str, minute: int, store: str, mode: str, quantity: int) -> str:
    hour, minute = divmod(minute, 60)
    return json.dumps(
        {
            "event_id": event_id,
            "type": "stock-adjusted",
            "occurred_at": f"2026-11-01T{8 + hour:02d}:{minute:02d}:00Z",
            "source": "pos",
            "sku": "CHAIN",
            "location": store,
            "mode": mode,
            "quantity": quantity,
        }
    )


def test_a_wide_skus_locations_survive_a_kill_in_records_of_their_own(tmp_path: Path) -> None:
    """A SKU at 60 stores: past WIDE_LOCATIONS each store is a record of its own, and a sale
    writes the SKU's small record and its store's. Across a kill the stores come back from their
    records, sales sent again are recognised, and `explain` reads the SKU whole."""
    (tmp_path / "catalog.yaml").write_text(CHAIN_CATALOG)
    catalog = read_catalog(tmp_path / "catalog.yaml")
    first = [stock_event(f"n{i}", 0, store, "count", 50 + i) for i, store in enumerate(STORES)]
    first += [
        stock_event(f"s{i}", 1 + i % 300, STORES[i * 7 % 60], "delta", -1) for i in range(600)
    ]
    # after the kill: sales sent again (a POS retrying), new ones, and a count of one store
    second = [
        stock_event(f"s{i}", 1 + i % 300, STORES[i * 7 % 60], "delta", -1) for i in range(0, 600, 5)
    ]
    second += [
        stock_event(f"s{i}", 301 + i % 60, STORES[i * 11 % 60], "delta", -1)
        for i in range(600, 900)
    ]
    second.append(stock_event("n-again", 200, STORES[7], "count", 10))
    (tmp_path / "all.jsonl").write_text("\n".join(first + second) + "\n")
    with LiveSystem(catalog, tmp_path) as live:
        expected, view = across_a_kill(live, tmp_path, first, second)
        assert view["positions"] == expected["positions"]
        assert view["availability"] == expected["availability"]
        records = raw_values(live, changelog_topic(live.settings.app_id, "skus"))
        last = json.loads(records[-1])
        assert last["w"] == len(STORES) and last["l"] == {}, sorted(last)  # its stores elsewhere
        assert len(records[-1]) < 1_024, len(records[-1])
        with open(tmp_path / "all.jsonl", "rb") as handle:
            engine, _, _ = run(catalog, handle)
        # the API's fallback reads the stores' records off the changelog when asked
        parts = ChangelogReader(live.bootstrap, changelog_topic(live.settings.app_id, "sku_parts"))
        partition = partition_for(b"CHAIN", live.settings.topic_partitions)
        beside = parts.scan(partition, b"CHAIN\x00")  # its parts too: 960 delta ids, past 512
        parts.close()
        places = [key for key in beside if key.startswith(b"CHAIN\x00@")]
        assert len(places) == len(STORES) + 1  # each store's record and their index

        def stored(name: int | str) -> Any:
            value = beside.get(part_key(b"CHAIN", name))
            return None if value is None else json.loads(value)

        joined = join_parts(last, stored)
        offline = engine.skus["CHAIN"]  # (its versions are simulate's, the catalog's too)
        for loc in STORES:
            live_at, offline_at = joined.location(loc), offline.location(loc)
            assert live_at.sellable.to_dict() == offline_at.sellable.to_dict(), loc
        clock = engine.stream_time.date()
        explained_live(live, "CHAIN", explain(catalog, engine.skus, "web", "CHAIN", clock), clock)
