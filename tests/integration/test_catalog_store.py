"""A catalog of any size on inventory.catalog, within Kafka's default 1 MB message limit: parts
and a manifest, read back whole by every reader (the start-up read and the API's feed)."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.client import kafka_config
from streams.core.catalog import Catalog, load_catalog
from streams.errors import BrokerError
from streams.runtime import EmbeddedBroker
from streams.runtime.catalog_store import (
    KEY,
    PART_BYTES,
    CatalogAssembler,
    part_key,
    publish,
    read_latest,
)
from streams.runtime.topics import CATALOG, TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


def big_catalog(listings: int, channel: str = "web") -> Catalog:
    return load_catalog(
        {
            "locations": [{"id": "wh-east"}, {"id": "wh-west"}],
            "channels": [{"id": channel, "type": "webhook", "locations": ["wh-east", "wh-west"]}],
            "safety_stock": [
                {"sku": f"SKU-{i:06d}", "location": "wh-east", "units": 1}
                for i in range(0, listings, 3)
            ],
            "listings": [
                {
                    "channel": channel,
                    "channel_sku": f"{channel}-SKU-{i:06d}",
                    "components": [{"sku": f"SKU-{i:06d}", "quantity": 1}],
                }
                for i in range(listings)
            ],
        }
    )


def records(bootstrap: str) -> list[tuple[bytes | None, bytes | None, int]]:
    consumer = Consumer({**kafka_config(bootstrap), "group.id": "t", "enable.partition.eof": True})
    consumer.assign([TopicPartition(CATALOG, 0, 0)])
    out = []
    try:
        while True:
            message = consumer.poll(5)
            assert message is not None, "inventory.catalog was not read to its end"
            if message.error():
                return out
            out.append((message.key(), message.value(), message.offset() or 0))
    finally:
        consumer.close()


def test_a_catalog_over_the_message_limit_is_published_and_read_back_whole() -> None:
    # a broker of its own, with the default 1 MB message limit
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, [TopicSpec(CATALOG, 1, 1, compacted=True)])
        big = big_catalog(20_000)
        size = len(json.dumps(big.model_dump(mode="json")))
        assert size > 3 * PART_BYTES and size > 2_000_000  # far over 1 MB as one record
        first = publish(bootstrap, big)
        assert read_latest(bootstrap) == first
        assert publish(bootstrap, big) == first  # the same catalog: nothing new
        second = publish(bootstrap, big_catalog(20_000, channel="shop"))
        assert second.version == first.version + 1
        assert read_latest(bootstrap) == second

        # the API's feed reads the topic from its start: every version, whole, in order
        assembler = CatalogAssembler()
        seen = [c for k, v, o in records(bootstrap) if (c := assembler.offer(k, v, o)) is not None]
        assert seen == [first, second]
        # and the first version's parts are tombstoned for compaction
        tombstoned = {k for k, v, _ in records(bootstrap) if v is None}
        assert part_key(first.version, 0) in tombstoned
        assert part_key(second.version, 0) not in tombstoned


def test_a_catalog_in_one_record_as_published_before_parts_is_still_read() -> None:
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, [TopicSpec(CATALOG, 1, 1, compacted=True)])
        old = big_catalog(10).model_copy(update={"version": 4})
        producer = Producer(kafka_config(bootstrap))
        producer.produce(CATALOG, json.dumps(old.model_dump(mode="json")).encode(), KEY)
        assert producer.flush(10) == 0
        assert read_latest(bootstrap) == old
        newer = publish(bootstrap, big_catalog(12))
        assert newer.version == 5 and read_latest(bootstrap) == newer


def test_a_manifest_whose_part_is_missing_is_a_clear_error() -> None:
    assembler = CatalogAssembler()
    manifest = json.dumps({"version": 3, "parts": [7, 8], "bytes": 10, "sha256": "0" * 64})
    assert assembler.offer(part_key(3, 0), b'{"locations"', 7) is None
    with pytest.raises(BrokerError, match="catalog v3: its part at offset 8"):
        assembler.offer(KEY, manifest.encode(), 9)
    with pytest.raises(BrokerError, match="do not add up"):
        assembler.offer(part_key(3, 0), b"12345", 7)
        assembler.offer(part_key(3, 1), b"67890", 8)
        assembler.offer(KEY, manifest.encode(), 9)
