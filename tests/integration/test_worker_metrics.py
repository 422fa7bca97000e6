"""A live worker's /metrics after a small stream: each KPI has the value the stream implies
(counted by the topology's own wiring, not by the test's calls)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streams.codec import make_codec
from streams.core.models import parse_event
from streams.runtime.broker import free_port
from streams.runtime.topics import EVENTS
from streams.simulate import read_catalog, simulate
from tests.integration.live import LiveSystem

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

SCENARIO = Path(__file__).parent.parent / "scenarios" / "basic"
# an order on amazon-us for more MUGs than there are: one oversold line
OVERSELL = {
    "event_id": "m1",
    "type": "order-created",
    "occurred_at": "2026-11-01T11:00:00Z",
    "source": "amazon-us",
    "order_id": "o-big",
    "channel": "amazon-us",
    "lines": [
        {"line_id": "1", "sku": "MUG", "quantity": 500},
        {"line_id": "2", "sku": "TEE-RED-M", "quantity": 1},
    ],
}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_workers_metrics_count_what_the_stream_did(tmp_path: Path) -> None:
    catalog = read_catalog(SCENARIO / "catalog.yaml")
    events = tmp_path / "events.jsonl"
    events.write_bytes((SCENARIO / "events.jsonl").read_bytes() + json.dumps(OVERSELL).encode())
    expected = simulate(catalog, events.read_bytes().splitlines())
    oversold = Counter(
        a["channel"] for a in expected["alerts"] if a["type"] == "oversell"
    )  # one alert per oversold line here: no line spans two locations
    assert oversold == {"amazon-us": 1}
    port = free_port()
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0, "--metrics-port", str(port))
        live.publish(events)  # every count below is the same in any order across the stages
        # what `publish` would refuse, straight to the topic: the worker dead-letters them
        codec = make_codec(live.settings)
        nowhere = parse_event(
            {
                "event_id": "m2",
                "type": "stock-adjusted",
                "occurred_at": "2026-11-01T11:00:00Z",
                "source": "test",
                "sku": "MUG",
                "location": "dock-9",
                "mode": "delta",
                "quantity": 1,
            }
        )
        producer = Producer({"bootstrap.servers": live.bootstrap})
        producer.produce(EVENTS, codec.encode(nowhere, EVENTS), b"MUG")
        producer.produce(EVENTS, b"\x00\x01 not an event", b"MUG")
        assert producer.flush(10) == 0
        del producer  # closed before the broker goes
        live.wait_idle()
        want = {
            ("inventory_order_lines_total", (("channel", "shopify-us"),)): 2.0,  # o1's two lines
            ("inventory_order_lines_total", (("channel", "amazon-us"),)): 2.0,
            ("inventory_oversold_order_lines_total", (("channel", "shopify-us"),)): 0.0,
            ("inventory_oversold_order_lines_total", (("channel", "amazon-us"),)): 1.0,
            # the scenario's bad1 (publish checks the schema, the worker the catalog) and m2
            ("inventory_dead_letters_total", (("reason", "unknown-location"),)): 2.0,
            ("inventory_dead_letters_total", (("reason", "malformed"),)): 1.0,
            ("inventory_positions_held", ()): float(len(expected["positions"])),
            (
                "inventory_consumer_lag_records",
                (("group", "inventory-streams"), ("topic", "inventory.events")),
            ): 0.0,
        }
        deadline = time.monotonic() + 30  # the held-state gauges and lag follow every 5 s
        while True:
            seen = scrape(port)
            got = {key: seen.get(key) for key in want}
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == want
        for channel in ("shopify-us", "amazon-us"):
            labels = (("channel", channel),)
            count = seen[("inventory_event_to_availability_seconds_count", labels)]
            total = seen[("inventory_event_to_availability_seconds_sum", labels)]
            assert count > 0 and 0 <= total / count < 10, (channel, count, total)
