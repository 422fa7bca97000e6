"""The catalog follower (the stages', the sinks') on a real broker: a newer catalog once, nothing
in between, and no consumer left behind to log reconnects after the broker is gone."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from confluent_kafka import Producer

from streams.core.catalog import load_catalog
from streams.runtime import EmbeddedBroker
from streams.runtime.catalog_store import KEY, LatestCatalog, part_key, publish
from streams.runtime.topics import CATALOG, TopicSpec, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]


def catalog(channel: str) -> dict[str, object]:
    return {
        "locations": [{"id": "wh"}],
        "channels": [{"id": channel, "type": "webhook", "locations": ["wh"]}],
        "listings": [],
    }


def test_a_newer_catalog_is_seen_once_and_close_leaves_nothing_to_reconnect(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # a broker of its own: the test stops it while the follower exists
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, [TopicSpec(CATALOG, 1, 1, compacted=True)])
        first = publish(bootstrap, load_catalog(catalog("pos-1")))
        latest = LatestCatalog(bootstrap)
        seen = latest()
        assert seen is not None and seen.version == first.version
        assert latest() is None  # nothing published since the last look
        second = publish(bootstrap, load_catalog(catalog("pos-2")))
        seen = latest()
        assert seen is not None and seen.version == second.version == first.version + 1
        assert [c.id for c in seen.channels] == ["pos-2"]
        assert latest() is None
        latest.close()
        capfd.readouterr()
    time.sleep(3)  # librdkafka retries a lost broker within about a second
    # a consumer left open writes a line to stderr for every failed reconnect
    assert "Connection refused" not in capfd.readouterr().err


def test_a_catalog_caught_between_its_parts_and_its_manifest_is_read_once_it_is_whole() -> None:
    # bench/scale.py's catalog series: a worker's check in the middle of a 1M-listing publish
    # raised here, in its watch_catalog timer, and the worker exited
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, [TopicSpec(CATALOG, 1, 1, compacted=True)])
        publish(bootstrap, load_catalog(catalog("pos-1")))
        latest = LatestCatalog(bootstrap)
        assert latest() is not None
        # version 2 as publish writes it, one record at a time: its part, then its manifest
        second = load_catalog(catalog("pos-2")).model_copy(update={"version": 2})
        whole = json.dumps(second.model_dump(mode="json")).encode()
        producer = Producer({"bootstrap.servers": bootstrap})
        offsets: list[int] = []
        producer.produce(
            CATALOG, whole, part_key(2, 0), on_delivery=lambda _, m: offsets.append(m.offset())
        )
        producer.flush(10)
        assert latest() is None  # under way: nothing new yet, and the worker keeps running
        manifest = {
            "version": 2,
            "parts": offsets,
            "bytes": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest(),
        }
        producer.produce(CATALOG, json.dumps(manifest).encode(), KEY)
        producer.flush(10)
        seen = latest()
        assert seen is not None and [c.id for c in seen.channels] == ["pos-2"]
        latest.close()
