"""The source producer: idempotent settings, keys from event_key, and every record accounted for."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from streams.core.models import OrderCreated, StockAdjusted
from streams.errors import Backpressure, DeliveryFailed
from streams.runtime.producer import producer_config
from streams.runtime.topics import DLQ, EVENTS
from tests.connectors.sources.source_fakes import fake_producer

T0 = datetime(2026, 11, 23, 10, tzinfo=UTC)


def adjustment(n: int, sku: str = "TEE-RED-M") -> StockAdjusted:
    return StockAdjusted(
        event_id=f"e{n}",
        occurred_at=T0,
        source="erp",
        sku=sku,
        location="wh-east",
        mode="delta",
        quantity=n,
    )


def test_config_is_idempotent_acks_all_bounded_and_java_partitioned() -> None:
    config = producer_config("localhost:9092", max_buffered_messages=1234)
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["queue.buffering.max.messages"] == 1234
    assert config["partitioner"] == "murmur2_random"


def test_events_are_keyed_by_event_key_and_dead_letters_keep_the_bytes() -> None:
    producer, kafka = fake_producer()
    producer.send_event(adjustment(1, sku="MUG"))
    order = OrderCreated(
        event_id="o1",
        occurred_at=T0,
        source="shop",
        order_id="1001",
        channel="web",
        lines=[{"line_id": "1", "sku": "MUG", "quantity": 1}],  # type: ignore[list-item]
    )
    producer.send_event(order)
    producer.dead_letter(b"\x00raw", "erp", "line 3: broken", key=b"f.csv:3")
    counts = producer.flush()
    assert [(m.topic(), m.key()) for m in kafka.log] == [
        (EVENTS, b"MUG"),
        (EVENTS, b"MUG"),  # SPEC §5: inventory.events is keyed by SKU, an order by its first
        (DLQ, b"f.csv:3"),
    ]
    (letter,) = kafka.dead_letters()
    assert (letter.original, letter.source, letter.reason, letter.key) == (
        b"\x00raw",
        "erp",
        "line 3: broken",
        b"f.csv:3",
    )
    assert (counts.events_sent, counts.events_acked, counts.dead_letters_acked) == (2, 2, 1)
    assert counts.pending == 0 and counts.failed == 0


def test_refused_records_are_counted_not_lost() -> None:
    producer, kafka = fake_producer(fail=lambda msg: msg.key() == b"MUG")
    producer.send_event(adjustment(1, sku="MUG"))
    producer.send_event(adjustment(2))
    counts = producer.flush()
    assert (counts.sent, counts.events_acked, counts.failed, counts.pending) == (2, 1, 1, 0)
    assert producer.errors() == ["inventory.events: Broker: refused"]
    assert len(kafka.log) == 1


async def test_async_sends_wait_for_acknowledgement() -> None:
    producer, kafka = fake_producer()
    try:
        await producer.send_async([producer.encode_event(adjustment(n)) for n in range(1, 4)])
        assert len(kafka.log) == 3  # acknowledged before send_async returned
    finally:
        producer.stop_polling()


async def test_async_sends_give_up_on_a_full_buffer() -> None:
    producer, _kafka = fake_producer(capacity=0)
    try:
        with pytest.raises(Backpressure, match=r"stayed full for 0\.05 s"):
            await producer.send_async([producer.encode_event(adjustment(1))], deadline=0.05)
        assert producer.counts().backpressure_waits > 0
    finally:
        producer.stop_polling()


async def test_async_sends_report_refusals() -> None:
    producer, _ = fake_producer(fail=lambda _msg: True)
    try:
        with pytest.raises(DeliveryFailed, match="refused 2 of 2 records"):
            await producer.send_async([producer.encode_event(adjustment(n)) for n in (1, 2)])
    finally:
        producer.stop_polling()


def test_blocking_sends_wait_while_the_buffer_is_full() -> None:
    producer, kafka = fake_producer(capacity=1)
    producer.start_polling()
    try:
        for n in range(1, 21):
            producer.send_event(adjustment(n))
    finally:
        producer.stop_polling()
    assert producer.flush().events_acked == 20 and len(kafka.log) == 20
    assert asyncio.iscoroutinefunction(producer.send_async)
