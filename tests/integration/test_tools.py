"""publish and tail on a real broker: nothing lost in batches, bad lines dead-lettered."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.codec import make_codec
from streams.core.models import Alert
from streams.runtime.broker import EmbeddedBroker
from streams.runtime.topics import ensure_topics, topic_specs
from streams.settings import Settings
from streams.simulate import read_catalog
from streams.tools import publish_file, tail
from tests.integration.live import LiveSystem

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]


def test_publish_then_tail_returns_every_record_of_batched_writes(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers=None)
    lines = [
        json.dumps(
            {
                "event_id": f"e{i}",
                "type": "stock-adjusted",
                "occurred_at": "2026-11-01T08:00:00Z",
                "source": "t",
                "sku": f"S{i % 7}",
                "location": "wh",
                "mode": "delta",
                "quantity": 1,
            }
        )
        for i in range(2_000)
    ]
    lines.insert(10, "{not json")
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    with EmbeddedBroker() as broker:  # a broker of its own: counts must not see other tests
        ensure_topics(broker.bootstrap_servers, topic_specs(settings, []))
        counts = publish_file(
            tmp_path / "events.jsonl", settings, broker.bootstrap_servers, progress=False
        )
        assert counts == {"published": 2_000, "rejected": 1}
        out = io.StringIO()
        assert tail("inventory.events", settings, broker.bootstrap_servers, out) == 2_000
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert {r["value"]["event_id"] for r in records} == {f"e{i}" for i in range(2_000)}
        assert all(r["key"] == r["value"]["sku"] for r in records)  # keyed by SKU (SPEC §5)
        out = io.StringIO()
        assert tail("inventory.dlq", settings, broker.bootstrap_servers, out) == 1
        letter = json.loads(out.getvalue())["value"]
        assert "line 11: malformed JSON" in letter["reason"]


def test_tombstones_and_foreign_records_on_the_event_log_are_dead_lettered(tmp_path: Path) -> None:
    scenarios = Path(__file__).parent.parent / "scenarios" / "basic"
    with LiveSystem(read_catalog(scenarios / "catalog.yaml"), tmp_path) as live:
        live.start_worker(0)
        producer = Producer({"bootstrap.servers": live.bootstrap})
        producer.produce("inventory.events", None, b"MUG")  # a tombstone
        alert = Alert(
            alert_id="a",
            type="drift",
            sku="MUG",
            message="m",
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        producer.produce("inventory.events", make_codec().encode(alert, "inventory.alerts"), b"MUG")
        producer.flush(10)
        live.publish(scenarios / "events.jsonl")  # the worker keeps going after both
        deadline = time.monotonic() + 60
        reasons: list[str] = []
        while time.monotonic() < deadline and len(reasons) < 4:
            time.sleep(1)
            reasons = [d["reason"] for d in live.latest_all("inventory.dlq")]
        assert any("tombstone" in r for r in reasons), reasons
        foreign = "Alert record does not belong on inventory.events"
        assert any(foreign in r for r in reasons), reasons
        assert live.workers[0].poll() is None, "the worker must survive bad records"
