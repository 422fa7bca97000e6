"""The stages' output producer: librdkafka (confluent-kafka) rather than Faust's pure-Python one.

At-least-once: `install(app)` makes Faust's own pre-commit producer flush also flush this producer
and fail the commit when any record was not acknowledged, so offsets are never committed past an
output that is not on the broker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streams.client import kafka_config
from streams.errors import BrokerError
from streams.runtime.faust_private import wrap_producer_flush

log = logging.getLogger(__name__)


class Outputs:
    def __init__(self, bootstrap: str, linger_ms: float = 2.0) -> None:
        self._bootstrap = bootstrap
        self._producer = Producer(
            {
                **kafka_config(bootstrap),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": linger_ms,
                # a delivery report (a Python callback served by poll) for every record: a
                # failure fails the commit, and `sent` waits for the reports of its records
                "delivery.report.only.error": False,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 200_000,
                # keys hash as Faust's producer and our sources hash them (Java murmur2)
                "partitioner": "murmur2_random",
                "logger": logging.getLogger("streams.outputs.librdkafka"),
                # one callback for every record: cheaper per produce() than one per call
                "on_delivery": self._delivered,
            }
        )
        self._failed: list[str] = []
        # e.g. deferred table writes; awaited, so a long one can let the stages run in between
        self.before_flush: list[Callable[[], Awaitable[None]]] = []
        self.after_flush: list[Callable[[], bool]] = []  # True: sent more, flush Faust again

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int = -1,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        timestamp: int = 0,  # epoch ms; 0: now
    ) -> None:
        self._produce(topic, key, value, partition, headers=headers, timestamp=timestamp)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        timestamp: int = 0,
    ) -> None:
        """Hand one record to librdkafka; its delivery report goes to `on_delivery`, else to
        `_delivered`."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=partition,
                    headers=headers,
                    timestamp=timestamp,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:  # backpressure: wait for acknowledgements, never grow unbounded
                self._producer.poll(0.05)

    def poll(self) -> None:
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}: {err}")

    async def sent(self, records: Sequence[tuple[str, bytes | None, bytes | None, int]]) -> None:
        """Send (topic, key, value, partition) records and return once the broker has every one,
        and so every record sent before each on its partition (the producer is idempotent: a
        partition's records are stored in the order sent). BrokerError if one failed; a failure
        also fails the next commit, as any output's does."""
        if not records:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        left = [len(records)]
        failed: list[str] = []
        lock = threading.Lock()  # reports are served by whichever thread polls (flush, below)

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append(f"{msg.topic()}: {err}")
                self._failed.append(failed[-1])
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                loop.call_soon_threadsafe(finish)

        for topic, key, value, partition in records:
            self._produce(topic, key, value, partition, delivered)
        while not done.done():
            # serve reports off the loop: back as soon as one is served, or after 5 ms (another
            # thread, a commit's flush, may serve ours)
            await loop.run_in_executor(None, self._producer.poll, 0.005)
            await asyncio.sleep(0)  # let `finish` run if the report was ours
        if failed:
            raise BrokerError(f"records not stored: {failed[:5]}")

    def reads_what_it_acknowledges(self, topic: str, partition: int, key: bytes) -> bool:
        """Whether a reader of the broker (a table's recovery, which reads a changelog up to the
        high watermark) sees every record the broker has acknowledged. Apache Kafka's watermark
        is the last stored offset + 1. Tansu's is the first offset of the partition's last batch
        + 1, so the records after it in that batch show only once another batch follows (see
        DeferredWrites.settle).

        Probed on `topic`[`partition`] with tombstones for `key` (a key no reader keeps): two
        records sent at once go in one batch, and once both are acknowledged the watermark is
        read. Kafka's is right after the second; Tansu's right after the first. A pair split in
        two batches (or another writer's batch in between) would look like Kafka's, so it takes
        three pairs in a row, none of them Tansu's, to say yes. Blocking: run it off the loop."""
        consumer = Consumer(
            {
                **kafka_config(self._bootstrap),
                "group.id": "watermark-probe",  # never joined: it only reads watermarks
                "enable.auto.commit": False,
            }
        )
        try:
            agreed = 0
            for _ in range(6):
                first, second = self._pair(topic, partition, key)
                if first < 0:
                    return False
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=5, cached=False
                )
                if high == first + 1:
                    return False  # up to the first of the batch: the second is not read
                if high == second + 1:
                    agreed += 1
                    if agreed == 3:
                        return True
            return False  # not conclusive: as if not
        finally:
            consumer.close()

    def _pair(self, topic: str, partition: int, key: bytes) -> tuple[int, int]:
        """Two tombstones sent at once, acknowledged: their offsets (-1 if one failed)."""
        offsets: list[int] = []
        done = threading.Event()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            offset = msg.offset()
            offsets.append(-1 if err is not None or offset is None else offset)
            if len(offsets) == 2:
                done.set()

        for _ in range(2):
            self._produce(topic, key, None, partition, delivered)
        deadline = time.monotonic() + 30
        while not done.wait(0.005):
            self._producer.poll(0)
            if time.monotonic() > deadline:
                return -1, -1
        return min(offsets), max(offsets)

    async def flush(self) -> None:
        remaining = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, 30)
        if remaining or self._failed:
            failed, self._failed = self._failed[:5], []
            raise BrokerError(f"{remaining} outputs unsent, failures: {failed}")

    def install(self, app: Any) -> None:
        """Hook this producer's flush into Faust's flush-before-commit."""

        async def flush(faust_flush: Callable[[], Awaitable[None]]) -> None:
            for hook in self.before_flush:
                await hook()
            await self.flush()
            await faust_flush()
            if any([hook() for hook in self.after_flush]):
                await self.flush()
                await faust_flush()

        wrap_producer_flush(app, flush)
