"""What the API shows besides reservations: availability as published, and the SKU states.

The views are fed from the compacted topics read from the beginning (`inventory.catalog`, every
`availability.<channel>`, the `skus` table's changelog); a record with the highest version wins,
and a channel added to the catalog is read from then on. A worker serving the API also offers its
own SKU states as they are in its memory (LiveState), ahead of the changelog by up to a commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams.api.feed import FeedThread, arrived, groupless_consumer
from streams.codec import Codec, record_to_json
from streams.core.catalog import Catalog
from streams.core.state import SkuState, join_parts, part_key, part_of
from streams.errors import InventoryError
from streams.runtime.catalog_store import CatalogAssembler
from streams.runtime.offsets import true_end_offsets
from streams.runtime.topics import CATALOG, availability_topic

log = logging.getLogger(__name__)

# a stream worker serving the API: a SKU's state in its memory, as its stage would apply the next
# event to it (read only); None when the worker does not hold it (another's partition, a rebalance)
LiveState = Callable[[str], SkuState | None]


class StateView:
    """Where the latest committed state of each SKU is (its partition and offset on the workers'
    `skus` table changelog), and the parts of a hot SKU's record (on the `sku_parts` one, as they
    came), for explain.

    A SKU's record is read back from the changelog when the SKU is explained, not kept: every
    worker serving the API reads the whole changelog, and as bytes the view held every SKU's
    record (8 MB for 2,000 SKUs in bench/soak.py, ~1 KB a position) in every worker; decoded, a
    quarter of a worker's CPU went to it under the soak's load. Nor are a wide SKU's location
    records kept (a chain at 200 stores has 200 a SKU: ~3 GB in every such worker at 100,000
    SKUs): they are read from the SKU's `sku_parts` partition when it is explained (`scan`)."""

    def __init__(
        self,
        read: Callable[[int, int], bytes | None] | None = None,
        scan: Callable[[int, bytes], dict[bytes, bytes]] | None = None,
    ) -> None:
        self._read = read  # (partition, offset) -> the record there; None: no changelog to read
        # (partition, key prefix) -> the latest value of each key with that prefix on the
        # `sku_parts` changelog's partition, tombstones left out
        self._scan = scan
        self._where: dict[str, tuple[int, int]] = {}
        self._parts: dict[str, dict[int | str, bytes]] = {}  # SKU -> part index -> part

    def offer(self, sku: str, partition: int, offset: int | None) -> None:
        """The SKU's latest record is at `offset` of `partition` (None: a tombstone)."""
        if offset is None:
            self._where.pop(sku, None)
            return
        self._where[sku] = (partition, offset)  # one dict store: thread-safe

    def offer_part(self, name: bytes, value: bytes | None) -> None:
        key, index = part_of(name)
        if isinstance(index, str):
            return  # a wide SKU's location, or their index: read when asked (scan)
        parts = self._parts.setdefault(key.decode(), {})
        if value is None:
            parts.pop(index, None)
        else:
            parts[index] = value

    def get(self, sku: str) -> SkuState | None:
        """The SKU's committed state: reads its record from the changelog (blocking; from a
        thread of its own in the API)."""
        where = self._where.get(sku)
        if where is None or self._read is None:
            return None
        record = self._read(*where)
        if record is None:
            return None
        data = orjson.loads(record)
        kept = dict(self._parts.get(sku, {}))
        if data.get("w") and self._scan is not None:
            for name, value in self._scan(where[0], part_key(sku.encode(), "")).items():
                kept[part_of(name)[1]] = value

        def part(name: int | str) -> Any:
            found = kept.get(name)
            return None if found is None else orjson.loads(found)

        return join_parts(data, part)

    def kept_parts(self) -> int:
        """How many part records the view holds (bytes in memory)."""
        return sum(len(parts) for parts in self._parts.values())


class ChangelogReader:
    """Reads one record of a topic by its partition and offset, with a consumer of its own: one
    read at a time, from any thread."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None  # opened at the first read

    def __call__(self, partition: int, offset: int) -> bytes | None:
        """The value at `offset` (None: a tombstone, or gone by compaction)."""
        with self._lock:
            if self._consumer is None:
                self._consumer = groupless_consumer(self.bootstrap, 100)
            consumer = self._consumer
            consumer.assign([TopicPartition(self.topic, partition, offset)])
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return None
                    continue
                if message.partition() != partition:
                    continue
                at = message.offset()
                if at is not None and at >= offset:
                    return message.value() if at == offset else None
            raise InventoryError(
                f"could not read {self.topic} [{partition}] at {offset} within {self.timeout} s"
            )

    def scan(self, partition: int, prefix: bytes) -> dict[bytes, bytes]:
        """The latest value of each key starting with `prefix` in `partition`, tombstoned keys
        left out: the whole partition read, up to its end when asked."""
        end = true_end_offsets(self.bootstrap, self.topic, [partition])[partition]
        found: dict[bytes, bytes | None] = {}
        with self._lock:
            if self._consumer is None:
                self._consumer = groupless_consumer(self.bootstrap, 100)
            consumer = self._consumer
            consumer.assign([TopicPartition(self.topic, partition, 0)])
            deadline = time.monotonic() + self.timeout
            while end > 0:
                if time.monotonic() > deadline:
                    raise InventoryError(
                        f"could not read {self.topic} [{partition}] within {self.timeout} s"
                    )
                message = consumer.poll(0.2)
                if message is None or message.error() or message.partition() != partition:
                    continue
                key, at = message.key(), message.offset()
                if key is not None and key.startswith(prefix):
                    found[key] = message.value()
                if at is not None and at + 1 >= end:
                    break
        return {key: value for key, value in found.items() if value is not None}

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


class AvailabilityView:
    """The latest availability record per (channel, channel_sku), as JSON; highest version wins."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], dict[str, Any]] = {}

    def offer(self, record: dict[str, Any]) -> None:
        key = (record["channel"], record["channel_sku"])
        current = self._records.get(key)
        if current is None or record["version"] >= current["version"]:
            self._records[key] = record  # one dict store: safe to do from the feed thread

    def get(self, channel: str, channel_sku: str) -> dict[str, Any] | None:
        return self._records.get((channel, channel_sku))


class ViewFeed(FeedThread):
    """Reads `inventory.catalog` and every `availability.<channel>` from the beginning."""

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        catalog: Catalog,
        view: AvailabilityView,
        on_catalog: Callable[[Catalog], None],
        *,
        partitions: int,
        fetch_wait_ms: int = 100,
        states: StateView | None = None,
        state_topic: str | None = None,
        parts_topic: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.view = view
        self.states = states
        self.state_topic = state_topic
        self.parts_topic = parts_topic
        self.on_catalog = on_catalog
        self.partitions = partitions
        self.fetch_wait_ms = fetch_wait_ms
        self._channels = {c.id for c in catalog.channels}
        self._version = catalog.version
        self._catalogs = CatalogAssembler()
        super().__init__()

    def start(self) -> None:
        consumer = groupless_consumer(self.bootstrap, self.fetch_wait_ms)
        states = (
            [
                TopicPartition(topic, p, 0)
                for topic in (self.state_topic, self.parts_topic)
                if topic
                for p in range(self.partitions)
            ]
            if self.states is not None and self.state_topic
            else []
        )
        consumer.assign(
            [
                TopicPartition(CATALOG, 0, 0),
                *self._availability_partitions(self._channels),
                *states,
            ]
        )
        self._launch(self._run, (consumer,), "api-views")

    def _availability_partitions(self, channels: Iterable[str]) -> list[TopicPartition]:
        return [
            TopicPartition(availability_topic(ch), p, 0)
            for ch in sorted(channels)
            for p in range(self.partitions)
        ]

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._halt.is_set():
                for message in arrived(consumer, 0.1):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.debug("reservation API: %s", error.str())
                        continue
                    topic = message.topic() or ""
                    if topic in (self.state_topic, self.parts_topic) and self.states is not None:
                        key = message.key()
                        if key is None or key.startswith(b"\x00"):  # commit markers
                            continue
                        if topic == self.state_topic:
                            at = None if message.value() is None else message.offset()
                            self.states.offer(key.decode(), message.partition() or 0, at)
                        else:
                            self.states.offer_part(key, message.value())
                        continue
                    if topic == CATALOG:
                        self._take_catalog(consumer, message)
                        continue
                    self._take(topic, message.value())
        except Exception as error:
            self.error = f"availability feed stopped: {error}"
            log.exception("reservation API: availability feed stopped")
        finally:
            consumer.close()

    def _take_catalog(self, consumer: Consumer, message: Message) -> None:
        offset = message.offset()
        assert offset is not None  # set on every consumed record
        try:
            catalog = self._catalogs.offer(message.key(), message.value(), offset)
        except InventoryError as error:
            log.warning("reservation API: unreadable catalog record: %s", error)
            return
        if catalog is None or catalog.version < self._version:
            return
        self._version = catalog.version
        self.on_catalog(catalog)
        new = {c.id for c in catalog.channels} - self._channels
        if new:
            self._channels |= new
            consumer.incremental_assign(self._availability_partitions(new))

    def _take(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = self.codec.decode(value, topic)
        except InventoryError as error:
            log.warning("reservation API: undecodable record on %s: %s", topic, error)
            return
        self.view.offer(record_to_json(record))
