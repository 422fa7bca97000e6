"""A memory table store that recovers its partitions by reading their changelog in bulk.

Faust recovers a memory table by passing every changelog record through its consumer, its event
objects and its recovery buffers: ~6-7k records a second here, whatever the broker. A worker
restarted at 1M positions (~280,000 changelog records) spent 47 of its 56 s to serving there.

This store reads each changelog partition newly assigned to it with one confluent-kafka consumer
in a thread (decoding with the table's own codec), up to the partition's high watermark as the
broker reports it. Faust's recovery waits for that load and then reads only from that offset on
(the records written since, and on Tansu the rest of the last batch, whose base offset the
watermark reports): `recover_after_bulk_loads` in faust_private. Standby partitions, and
partitions kept across a rebalance, stay on Faust's own path, as before.

The load runs after the rebalance callback, not in it: aiokafka sends no heartbeat until the
callback returns, so a load longer than the session timeout (6 s; 7.4 s at 1M positions) would
have the group drop the worker, and the rebalance after it would load again, and again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from faust.stores import memory
from faust.types import TP

from streams.runtime.heap import trim_heap

log = logging.getLogger(__name__)

Decode = Callable[[bytes], Any]
# a load not done by then is given up, and Faust recovers the partitions itself: under Faust's
# broker_request_timeout (90 s), after which its recovery stops waiting for the load
READ_TIMEOUT = 60.0


def read_changelog(
    config: Mapping[str, Any],
    topic: str,
    partitions: Iterable[int],
    decode_key: Decode,
    decode_value: Decode,
    timeout: float = READ_TIMEOUT,
) -> tuple[dict[int, dict[Any, Any]], dict[int, set[Any]], dict[int, int]]:
    """Each partition's last value per key and the keys whose last record is a tombstone, read
    from the start up to the high watermark the broker reports now; and that watermark minus one
    per partition with records, the offset Faust's recovery is to go on from."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"changelog-load-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "queued.max.messages.kbytes": 32_768,  # what the consumer buffers ahead of us
        }
    )
    values: dict[int, dict[Any, Any]] = {}
    deleted: dict[int, set[Any]] = {}
    resume: dict[int, int] = {}
    try:
        todo: dict[int, int] = {}  # partition -> the watermark still to reach
        for p in partitions:
            values[p], deleted[p] = {}, set()
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                todo[p] = high
                resume[p] = high - 1
        if not todo:
            return values, deleted, resume
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: partitions {sorted(todo)} not read to their end within {timeout:g} s"
                )
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                p = cast(int, message.partition())
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.pop(p, None)
                        continue
                    raise KafkaException(error)
                if p not in todo:
                    continue  # past the watermark: Faust's recovery reads it
                key = decode_key(cast(bytes, message.key()))
                raw = message.value()
                if raw is None:
                    values[p].pop(key, None)
                    deleted[p].add(key)
                else:
                    deleted[p].discard(key)
                    values[p][key] = decode_value(raw)
                if cast(int, message.offset()) >= todo[p] - 1:
                    todo.pop(p)
        return values, deleted, resume
    finally:
        consumer.close()


class ChangelogLoadedStore(memory.Store):
    """Faust's memory store, with partitions newly assigned to it loaded in bulk (see module)."""

    config: Mapping[str, Any]  # librdkafka's, the cluster's security included (bulk_recovered)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._assigned: set[TP] = set()  # this store's active changelog partitions now
        self._loaded: set[TP] = set()  # active partitions whose data this store holds
        self._resume: dict[TP, int] = {}  # loaded since the last rebalance: where recovery goes on
        self._loading: asyncio.Future[None] | None = None  # the last load started

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Start loading the active changelog partitions this store does not hold; no wait."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        self._resume.clear()
        self._loaded.difference_update(revoked)
        topics = self.table.changelog_topic.topics
        standbys = self.app.assignor.assigned_standbys()
        self._assigned = {tp for tp in assigned if tp.topic in topics and tp not in standbys}
        todo = sorted(self._assigned - self._loaded)
        if todo:
            self._loading = asyncio.ensure_future(self._load(todo, self._loading))

    async def loaded(self) -> dict[TP, int]:
        """Once the last load started is done: the offset recovery goes on from, per partition
        loaded since the last rebalance (none: Faust's own offset, as for a kept partition)."""
        if self._loading is not None:
            await self._loading
        return dict(self._resume)

    async def _load(self, todo: list[TP], previous: asyncio.Future[None] | None) -> None:
        if previous is not None:  # loads apply in the order they started
            await asyncio.gather(previous, return_exceptions=True)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(None, self._read, todo)
        except (KafkaException, TimeoutError) as error:
            # a speed-up only: Faust's recovery reads these partitions whole, as it always did
            log.warning(
                "%s: changelog not loaded in bulk (%s); Faust recovers it", self.table_name, error
            )
            return
        mine = [tp for tp in todo if tp in self._assigned]  # not revoked since
        records = self.apply_loaded(mine, *loaded)
        del loaded  # the load's own dicts: their heap goes back to the system (heap module)
        await loop.run_in_executor(None, trim_heap)
        log.warning(  # once per rebalance, beside the worker's "assigned partitions"
            "%s: %d keys of %d changelog partitions loaded in %.1f s",
            self.table_name,
            records,
            len(mine),
            time.perf_counter() - started,
        )

    def _read(self, tps: list[TP]) -> Any:
        registry = self.app.serializers
        return read_changelog(
            self.config,
            self.table.changelog_topic.get_topic_name(),
            [tp.partition for tp in tps],
            lambda raw: registry.loads_key(self.key_type, raw, serializer=self.key_serializer),
            lambda raw: registry.loads_value(
                self.value_type, raw, serializer=self.value_serializer
            ),
        )

    def apply_loaded(
        self,
        tps: list[TP],
        values: dict[int, dict[Any, Any]],
        deleted: dict[int, set[Any]],
        resume: dict[int, int],
    ) -> int:
        """What `read_changelog` found, into the table, as Faust's recovery would have put it."""
        count = 0
        for tp in tps:
            p = tp.partition
            for key in deleted[p]:
                self.data.pop(key, None)
                self._key_partition.pop(key, None)
            self.data.update(values[p])
            self._key_partition.update(dict.fromkeys(values[p], p))
            count += len(values[p])
            self._loaded.add(tp)
            if p in resume:
                self._resume[tp] = resume[p]
        return count
