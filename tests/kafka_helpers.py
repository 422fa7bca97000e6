"""Synchronous Kafka helpers for tests: unique names, explicit topics, produce, read to the end."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.runtime.offsets import true_end_offsets
from streams.runtime.topics import TopicSpec, ensure_topics

Payload = str | bytes | None


def unique_name(prefix: str = "test") -> str:
    """A topic/group name no other test uses on a shared broker."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-.")[:180] or "test"
    return f"{safe}-{uuid.uuid4().hex[:8]}"


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    *,
    compacted: bool = False,
    config: Mapping[str, str] | None = None,
) -> str:
    """Create `name` explicitly (a topic used before it exists gets the broker's default layout)."""
    spec = TopicSpec(name, partitions, compacted=compacted, extra=dict(config or {}))
    ensure_topics(bootstrap, [spec], timeout=10.0)
    return name


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[Payload, Payload]],
    *,
    headers: Mapping[str, str | bytes] | None = None,
    partition: int | None = None,
    timeout: float = 10.0,
) -> int:
    """Produce (key, value) records and wait until every one is acknowledged; return the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err.str())

    count = 0
    for key, value in records:
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=-1 if partition is None else partition,  # -1: the partitioner decides
            headers=list((headers or {}).items()),
            on_delivery=on_delivery,
        )
        count += 1
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise AssertionError(f"produce to {topic}: {remaining} unacknowledged, errors: {errors}")
    return count


def consume_all(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Message]:
    """Every record in `topic` now, ordered by (partition, offset).

    Reads each partition from its start to the high watermark seen on entry, with assign() and
    no group join, so it returns as soon as the topic is read (no waiting out a timeout).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("consume-all"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    deadline = time.monotonic() + timeout
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise AssertionError(f"topic {topic} does not exist: {described and described.error}")
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        # the true ends: Tansu's high watermark stops at the last batch's first record
        true_ends = true_end_offsets(bootstrap, topic, sorted(described.partitions), timeout)
        for p in sorted(described.partitions):
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            high = true_ends[p]
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        if not starts:
            return []
        consumer.assign(starts)
        messages: list[Message] = []
        while True:
            for msg in consumer.consume(num_messages=500, timeout=0.1):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                messages.append(msg)
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"read {len(messages)} records of {topic} in {timeout:g} s without reaching "
                    f"its end {ends}"
                )
        messages.sort(key=lambda m: (m.partition() or 0, m.offset() or 0))
        return messages
    finally:
        consumer.close()


def stock_event(event_id: str) -> str:
    """One valid event as a JSONL line's text: a +1 adjustment of TEE-RED-M at wh-east."""
    return json.dumps(
        {
            "event_id": event_id,
            "type": "stock-adjusted",
            "occurred_at": "2026-12-01T08:00:00Z",
            "source": "wms",
            "sku": "TEE-RED-M",
            "location": "wh-east",
            "mode": "delta",
            "quantity": 1,
        }
    )
