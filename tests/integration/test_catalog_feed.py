"""The catalog follower (the stages', the sinks') on a real broker: a newer catalog once, nothing
in between, and no consumer left behind to log reconnects after the broker is gone."""

from __future__ import annotations

import time

import pytest

from streams.core.catalog import load_catalog
from streams.runtime import EmbeddedBroker
from streams.runtime.catalog_store import LatestCatalog, publish
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
