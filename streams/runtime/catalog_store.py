"""The catalog on Kafka: the compacted `inventory.catalog` topic holds the latest catalog, so a
worker started anywhere, and a replay, derive availability from the same catalog version."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.client import kafka_config
from streams.core.catalog import Catalog, load_catalog
from streams.errors import BrokerError, CatalogUnderWay, InvalidCatalog
from streams.runtime.topics import CATALOG

log = logging.getLogger(__name__)

KEY = b"catalog"  # the manifest's key (and a whole catalog's, as published before parts)
PART_BYTES = 512 * 1024  # a part of the catalog's JSON: well under Kafka's default 1 MB limit


def part_key(version: int, index: int) -> bytes:
    return f"catalog.v{version}.{index}".encode()


class CatalogAssembler:
    """Catalogs from the records of inventory.catalog, read in order from anywhere before a
    manifest's first part.

    A catalog of any size goes out as parts of at most PART_BYTES of its JSON (keys
    `catalog.v{version}.{i}`), then a manifest under `catalog`: the version, each part's offset,
    the length and the SHA-256 of the whole. A record under `catalog` holding a catalog itself
    (as published before parts) is read as it always was.
    """

    def __init__(self) -> None:
        self._parts: dict[int, bytes] = {}  # offset -> part, since the last manifest

    def offer(self, key: bytes | None, value: bytes | None, offset: int) -> Catalog | None:
        """The catalog this record completes, or None; InvalidCatalog or BrokerError when the
        record under `catalog` is not one."""
        if key != KEY:
            if key is not None and key.startswith(b"catalog.v") and value is not None:
                self._parts[offset] = value
            return None
        if value is None:
            raise BrokerError(
                f"the latest record on {CATALOG} is a tombstone: publish a "
                "catalog with `inventory-streams catalog FILE`"
            )
        parts, self._parts = self._parts, {}
        try:
            data = json.loads(value)
        except ValueError as error:
            raise InvalidCatalog(f"not JSON: {error}") from None
        if not (isinstance(data, dict) and "parts" in data and "sha256" in data):
            return load_catalog(data)  # a whole catalog in one record
        try:
            whole = b"".join(parts[offset] for offset in data["parts"])
        except KeyError as missing:
            raise BrokerError(
                f"catalog v{data.get('version')}: its part at offset {missing} is not on {CATALOG}"
            ) from None
        if len(whole) != data["bytes"] or hashlib.sha256(whole).hexdigest() != data["sha256"]:
            raise BrokerError(f"catalog v{data.get('version')}: its parts do not add up")
        return load_catalog(json.loads(whole))


def read_latest(bootstrap: str, timeout: float = 10.0) -> Catalog | None:
    """The last catalog published, or None when none has been."""
    return _latest(bootstrap, timeout)[0]


def _latest(bootstrap: str, timeout: float) -> tuple[Catalog | None, int]:
    """The last catalog published (None when none has been) and how many parts its manifest
    names (0 for a catalog in one record)."""
    from streams.runtime.offsets import true_end_offsets

    end = true_end_offsets(bootstrap, CATALOG, [0], timeout)[0]
    consumer = Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"catalog-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 8 * 1024 * 1024,
        }
    )
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(CATALOG, 0), timeout=timeout)
        if end <= low:
            return None, 0
        deadline = time.monotonic() + timeout
        manifest = _read_one(consumer, end - 1, deadline)
        if (manifest.key() or b"").startswith(b"catalog.v"):
            raise CatalogUnderWay(f"a catalog is being published on {CATALOG}: no manifest yet")
        if manifest.key() != KEY:
            raise BrokerError(f"the latest record on {CATALOG} is not a catalog's manifest")
        first, parts = end - 1, 0
        try:
            data = json.loads(manifest.value() or b"null")
            if isinstance(data, dict) and "parts" in data:
                first, parts = min([end - 1, *data["parts"]]), len(data["parts"])
        except ValueError:
            pass  # the assembler says what is wrong with it
        assembler = CatalogAssembler()
        consumer.assign([TopicPartition(CATALOG, 0, first)])
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            offset = message.offset()
            assert offset is not None  # set on every consumed record
            if offset > end - 1:
                break
            try:
                catalog = assembler.offer(message.key(), message.value(), offset)
            except InvalidCatalog as error:
                reason = f"the latest record on {CATALOG} is not a catalog: {error}"
                raise BrokerError(reason) from None
            if offset == end - 1:
                return catalog, parts
        raise BrokerError(f"could not read {CATALOG} within {timeout:.0f} s")
    finally:
        consumer.close()


def _read_one(consumer: Consumer, offset: int, deadline: float) -> Message:
    consumer.assign([TopicPartition(CATALOG, 0, offset)])
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error() and message.offset() == offset:
            consumer.unassign()
            return message
    raise BrokerError(f"could not read {CATALOG} within the time given")


class CatalogFeed:
    """Tells cheaply whether a catalog was published since the last look (one end-offset query)."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumer: Consumer | None = None
        self._seen = -1

    def changed(self) -> bool:
        """True on the first call and whenever inventory.catalog has grown since the last one."""
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **kafka_config(self._bootstrap),
                    "group.id": f"catalog-feed-{uuid.uuid4().hex}",
                }
            )
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(CATALOG, 0), timeout=5)
        except KafkaException as error:  # broker out of reach: no news; the next check asks again
            log.warning("catalog check: cannot read %s (%s)", CATALOG, error)
            return False
        grown, self._seen = high != self._seen, high
        return grown

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class LatestCatalog:
    """The one follower of inventory.catalog (the stages', the sinks'): the latest catalog when
    the topic grew since the last look (the first look included), else None.

    Blocking (one end-offset query; a read only when the topic grew): call it from a thread.
    """

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._feed = CatalogFeed(bootstrap)

    def __call__(self) -> Catalog | None:
        if not self._feed.changed():
            return None
        try:
            return read_latest(self._bootstrap)
        except CatalogUnderWay:  # its manifest grows the topic again: the next look reads it
            return None

    def close(self) -> None:
        """Before the broker goes: a consumer left open logs every failed reconnect."""
        self._feed.close()


def announce(bootstrap: str, version: int, partitions: int) -> None:
    """Tell every partition's SKU stage that catalog `version` is out (else workers notice by
    themselves within a catalog check interval)."""
    from streams.commands import catalog_changed
    from streams.runtime.topics import COMMANDS

    producer = Producer({**kafka_config(bootstrap), "acks": "all"})
    for partition in range(partitions):
        producer.produce(COMMANDS, catalog_changed(version), partition=partition)
    if producer.flush(10) != 0:
        raise BrokerError(f"catalog announcement was not acknowledged by {bootstrap}")


def publish(bootstrap: str, catalog: Catalog) -> Catalog:
    """Publish `catalog` under the next version number; returns what was published."""
    latest, previous_parts = _latest(bootstrap, 10.0)
    if latest is not None:
        same = latest.model_dump(exclude={"version"}) == catalog.model_dump(exclude={"version"})
        if same:
            return latest
        catalog = catalog.model_copy(update={"version": latest.version + 1})
    elif catalog.version == 0:
        catalog = catalog.model_copy(update={"version": 1})
    whole = json.dumps(catalog.model_dump(mode="json")).encode()
    producer = Producer({**kafka_config(bootstrap), "acks": "all", "enable.idempotence": True})
    offsets: dict[int, int] = {}
    failed: list[str] = []

    def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
        def note(err: KafkaError | None, message: Message) -> None:
            if err is not None:
                failed.append(err.str())
            else:
                offsets[index] = message.offset() or 0

        return note

    count = max(1, -(-len(whole) // PART_BYTES))
    for index in range(count):
        chunk = whole[index * PART_BYTES : (index + 1) * PART_BYTES]
        producer.produce(
            CATALOG, chunk, part_key(catalog.version, index), on_delivery=delivered(index)
        )
    if producer.flush(60) != 0 or failed:
        raise BrokerError(f"catalog parts were not acknowledged by {bootstrap}: {failed[:3]}")
    if latest is not None:  # the last version's parts: compaction may drop them now
        for index in range(previous_parts):
            producer.produce(CATALOG, None, part_key(latest.version, index))
    manifest = {
        "version": catalog.version,
        "parts": [offsets[i] for i in range(count)],
        "bytes": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
    }
    producer.produce(CATALOG, json.dumps(manifest).encode(), KEY)
    if producer.flush(10) != 0:
        raise BrokerError(f"catalog was not acknowledged by {bootstrap}")
    return catalog
