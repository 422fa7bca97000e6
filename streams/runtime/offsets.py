"""End offsets that can be trusted on any broker.

Tansu (the embedded broker) reports a partition's high watermark as the base offset of its last
record batch plus one, so a batch of 50 records reads as one. The true end is found by reading the
last batch from just below the reported watermark.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from streams.client import kafka_config

SETTLE = 0.05  # seconds after a partition's first record: the rest of its batch has come


def true_end_offsets(
    bootstrap: str, topic: str, partitions: list[int], timeout: float = 5.0
) -> dict[int, int]:
    """The end offset of each of `topic`'s `partitions`."""
    ends = true_end_offsets_many(bootstrap, {topic: partitions}, timeout)
    return {p: ends[(topic, p)] for p in partitions}


def true_end_offsets_many(
    bootstrap: str, partitions: dict[str, list[int]], timeout: float = 5.0
) -> dict[tuple[str, int], int]:
    """End offsets of several topics' partitions, read with one consumer.

    The last batch comes whole in one fetch response: a partition is done at its end-of-partition
    event, or SETTLE seconds after its first record, on a partition still being written to (the
    records after it are later batches, not wanted, and chasing them would decode every record a
    busy partition receives, for up to `timeout`, holding the GIL a caller's event loop needs).
    """
    consumer = Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"ends-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # an empty fetch waits this long on the broker (500 ms by default): the
            # end-of-partition event comes after it
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        starts = []
        for topic, numbers in partitions.items():
            for p in numbers:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                ends[(topic, p)] = high
                if high > 0:
                    starts.append(TopicPartition(topic, p, high - 1))
        if not starts:
            return ends
        consumer.assign(starts)
        waiting = {(tp.topic, tp.partition) for tp in starts}
        first_seen: dict[tuple[str, int], float] = {}
        deadline = time.monotonic() + timeout
        while waiting:
            now = time.monotonic()
            waiting -= {tp for tp, at in first_seen.items() if now - at > SETTLE}
            if not waiting or now >= deadline:
                break
            message = consumer.poll(min(SETTLE, deadline - now))
            if message is None:
                continue
            name, partition, offset = message.topic(), message.partition(), message.offset()
            assert name is not None and partition is not None  # set on every message and event
            if message.error():
                waiting.discard((name, partition))  # end of partition reached
                continue
            assert offset is not None  # set on every consumed record
            first_seen.setdefault((name, partition), now)
            ends[(name, partition)] = max(ends[(name, partition)], offset + 1)
        return ends
    finally:
        consumer.close()


class LagProbe:
    """A consumer group's lag on given partitions: true end offsets minus its committed offsets.

    Blocking (a second at most on a busy partition): call it from a thread, every few seconds.
    """

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self._group = Consumer(
            {**kafka_config(bootstrap), "group.id": group, "enable.auto.commit": False}
        )

    def behind(self, partitions: list[tuple[str, int]], timeout: float = 1.0) -> dict[str, int]:
        """Records not yet committed per topic (a partition never committed counts from 0)."""
        if not partitions:
            return {}
        wanted: dict[str, list[int]] = {}
        for topic, partition in partitions:
            wanted.setdefault(topic, []).append(partition)
        ends = true_end_offsets_many(self.bootstrap, wanted, timeout)
        committed = self._group.committed(
            [TopicPartition(t, p) for t, p in partitions], timeout=timeout
        )
        out: dict[str, int] = {}
        for tp in committed:
            end = ends.get((tp.topic, tp.partition), 0)
            out[tp.topic] = out.get(tp.topic, 0) + max(0, end - max(tp.offset, 0))
        return out

    def close(self) -> None:
        self._group.close()
