"""End offsets that can be trusted on any broker.

Tansu (the embedded broker) reports a partition's high watermark as the base offset of its last
record batch plus one, so a batch of 50 records reads as one. The true end is found by reading the
last batch from just below the reported watermark.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition


def true_end_offsets(
    bootstrap: str, topic: str, partitions: list[int], timeout: float = 5.0
) -> dict[int, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ends-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        ends: dict[int, int] = {}
        starts = []
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            ends[p] = high
            if high > 0:
                starts.append(TopicPartition(topic, p, high - 1))
        if not starts:
            return ends
        consumer.assign(starts)
        waiting = {tp.partition for tp in starts}
        while waiting:
            message = consumer.poll(timeout)
            if message is None:
                break
            if message.error():
                waiting.discard(message.partition())  # end of partition reached
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None  # set on every consumed record
            ends[partition] = max(ends[partition], offset + 1)
        return ends
    finally:
        consumer.close()
