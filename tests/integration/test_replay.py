"""replay on a real broker: a rebuild from the log ends where `simulate` ends; dead letters are
re-driven once after a fix."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.errors import InventoryError
from streams.replay import GroupActive, Start, parse_offsets, rebuild, redrive, start_offsets
from streams.runtime.catalog_store import publish
from streams.runtime.progress import StageProgress
from streams.simulate import read_catalog, simulate
from tests.integration.live import LiveSystem
from tests.kafka_helpers import create_topic, unique_name

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).parent.parent / "scenarios"


def test_a_rebuild_from_the_beginning_reproduces_simulate(tmp_path: Path) -> None:
    scenario = SCENARIOS / "late-and-duplicate"
    catalog = read_catalog(scenario / "catalog.yaml")
    expected = simulate(catalog, (scenario / "events.jsonl").read_bytes().splitlines())
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        live.publish(scenario / "events.jsonl")
        assert live.wait_for(expected, timeout=60)["positions"] == expected["positions"]
        live.wait_idle()
        # Kafka names the members, Tansu only the group's state: both say what to do
        with pytest.raises(GroupActive, match="stop every worker and `up`"):
            rebuild(live.settings, live.bootstrap, Start(beginning=True), wait=2)
        live.stop_worker(0)
        before = live.position_count()

        progress = StageProgress(enabled=False)
        report = rebuild(
            live.settings, live.bootstrap, Start(beginning=True), wait=60, progress=progress
        )
        steps = "recreating internal topics"
        assert progress.done[steps] == progress.totals[steps] == 3  # every step reported
        assert report.start == {p: 0 for p in range(live.settings.topic_partitions)}
        assert "inventory-streams-skus-changelog" in report.recreated
        assert live.latest("inventory-streams-skus-changelog") == {}  # the old state is gone

        live.start_worker(1)
        deadline = time.monotonic() + 60
        while live.position_count() == before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert live.position_count() > before, "the rebuilt worker wrote no positions"
        live.settle(expected, timeout=60)
        for channel in catalog.channels:  # versions kept increasing across the rebuild
            for key, versions in live.versions(f"availability.{channel.id}").items():
                assert versions == sorted(set(versions)), (key, versions)


def test_dead_letters_are_re_driven_once_after_a_fix(tmp_path: Path) -> None:
    catalog = read_catalog(SCENARIOS / "basic" / "catalog.yaml")
    base = {"type": "stock-adjusted", "occurred_at": "2026-11-01T08:00:00Z", "source": "wms"}
    lines = [
        # valid but for a location the catalog does not have yet: the worker dead-letters it
        {
            **base,
            "event_id": "n1",
            "sku": "MUG",
            "location": "store-99",
            "mode": "count",
            "quantity": 7,
        },
        {
            **base,
            "event_id": "n2",
            "sku": "MUG",
            "location": "wh-east",
            "mode": "count",
            "quantity": -1,
        },  # refused by publish, and still invalid after any catalog fix
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        assert live.publish(tmp_path / "in.jsonl") == {"published": 1, "rejected": 1}
        deadline = time.monotonic() + 60
        while len(live.latest_all("inventory.dlq")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        reasons = sorted(d["reason"] for d in live.latest_all("inventory.dlq"))
        assert any("unknown location 'store-99'" in r for r in reasons), reasons
        live.stop_worker(0)

        # the fix: the location joins the catalog
        fixed = catalog.model_copy(
            update={
                "locations": [
                    *catalog.locations,
                    catalog.locations[0].model_copy(update={"id": "store-99"}),
                ]
            }
        )
        publish(live.bootstrap, fixed)
        dry = redrive(live.settings, live.bootstrap, None, fixed, dry_run=True)
        assert (dry.read, dry.redriven) == (2, 1)
        progress = StageProgress(enabled=False)
        first = redrive(live.settings, live.bootstrap, None, fixed, progress=progress)
        assert (first.read, first.redriven, len(first.left)) == (2, 1, 1)
        assert progress.done == progress.totals == {"re-driving inventory.dlq": 2}
        assert "a count cannot be negative" in first.left[0]["reason"]
        second = redrive(live.settings, live.bootstrap, None, fixed)
        assert (second.read, second.redriven) == (0, 0)  # the committed position held

        live.start_worker(1)
        deadline = time.monotonic() + 60
        positions: dict = {}
        while "MUG|store-99" not in positions and time.monotonic() < deadline:
            time.sleep(0.5)
            positions = live.latest("inventory.positions")
        assert positions["MUG|store-99"]["on_hand"] == 7


def test_a_start_by_offset_or_by_time_is_found_on_the_broker_and_clamped_to_the_log(
    kafka_bootstrap: str,
) -> None:
    """--from-offset and --from-time: where a rebuild would start in each partition."""
    topic = create_topic(kafka_bootstrap, unique_name("replay-start"), partitions=2)
    t0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    written = {0: [0, 10, 20], 1: [5, 15]}  # minutes after t0, per partition, in log order
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for partition, minutes in written.items():
        for minute in minutes:
            at = int((t0 + timedelta(minutes=minute)).timestamp() * 1000)
            producer.produce(topic, b"x", partition=partition, timestamp=at)
    assert producer.flush(10) == 0

    def start(**how: Any) -> dict[int, int]:
        return start_offsets(kafka_bootstrap, topic, Start(**how))

    # a scan by time reports how far it is: all 5 records, once every partition's start is found
    progress = StageProgress(enabled=False)
    at = t0 + timedelta(minutes=11)
    assert start_offsets(kafka_bootstrap, topic, Start(time=at), progress) == {0: 2, 1: 1}
    scan = f"scanning {topic} for {at.isoformat()}"
    assert progress.done[scan] == progress.totals[scan] == 5

    assert start(beginning=True) == {0: 0, 1: 0}
    # by time: the first record written at or after it
    assert start(time=t0 + timedelta(minutes=10)) == {0: 1, 1: 1}
    assert start(time=t0 + timedelta(minutes=11)) == {0: 2, 1: 1}
    assert start(time=t0 - timedelta(days=1)) == {0: 0, 1: 0}
    assert start(time=t0 + timedelta(days=1)) == {0: 3, 1: 2}  # after the last: nothing to read
    # by offset: one for every partition, or per partition (the others from their start)
    assert start(offsets=2) == {0: 2, 1: 2}
    assert start(offsets=parse_offsets("1:1")) == {0: 0, 1: 1}
    assert start(offsets=99) == {0: 3, 1: 2}  # never past the end of the log
    with pytest.raises(InventoryError, match="has no partition 7"):
        start(offsets={7: 1})
