"""The catalog on Kafka: the compacted `inventory.catalog` topic holds the latest catalog, so a
worker started anywhere, and a replay, derive availability from the same catalog version."""

from __future__ import annotations

import json
import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams.client import kafka_config
from streams.core.catalog import Catalog, load_catalog
from streams.errors import BrokerError
from streams.runtime.topics import CATALOG

log = logging.getLogger(__name__)

KEY = b"catalog"


def read_latest(bootstrap: str, timeout: float = 10.0) -> Catalog | None:
    """The last catalog published, or None when none has been."""
    consumer = Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"catalog-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        tp = TopicPartition(CATALOG, 0)
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        if high <= low:
            return None
        consumer.assign([TopicPartition(CATALOG, 0, high - 1)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = message.value()
            if value is None:
                raise BrokerError(
                    f"the latest record on {CATALOG} is a tombstone: publish a "
                    "catalog with `inventory-streams catalog FILE`"
                )
            try:
                return load_catalog(json.loads(value))
            except ValueError as error:
                reason = f"the latest record on {CATALOG} is not a catalog: {error}"
                raise BrokerError(reason) from None
        raise BrokerError(f"could not read {CATALOG} within {timeout:.0f} s")
    finally:
        consumer.close()


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
    latest = read_latest(bootstrap)
    if latest is not None:
        same = latest.model_dump(exclude={"version"}) == catalog.model_dump(exclude={"version"})
        if same:
            return latest
        catalog = catalog.model_copy(update={"version": latest.version + 1})
    elif catalog.version == 0:
        catalog = catalog.model_copy(update={"version": 1})
    producer = Producer({**kafka_config(bootstrap), "acks": "all"})
    producer.produce(CATALOG, json.dumps(catalog.model_dump(mode="json")).encode(), KEY)
    if producer.flush(10) != 0:
        raise BrokerError(f"catalog was not acknowledged by {bootstrap}")
    return catalog
