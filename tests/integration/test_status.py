"""`up`'s status view reads its counts from the broker: a channel added by a newer catalog is
counted once the view follows it."""

from __future__ import annotations

import pytest

from streams.runtime.supervisor import StatusReader
from streams.runtime.topics import availability_topic, ensure_topics, topic_specs
from streams.settings import Settings
from tests.kafka_helpers import create_topic, produce, unique_name

pytestmark = pytest.mark.integration


def test_the_status_view_counts_the_availability_of_a_channel_it_follows(
    kafka_bootstrap: str,
) -> None:
    settings = Settings()
    ensure_topics(kafka_bootstrap, topic_specs(settings, []))
    first, added = unique_name("status-first"), unique_name("status-added")
    for channel, records in ((first, 2), (added, 3)):
        topic = create_topic(kafka_bootstrap, availability_topic(channel), 2, compacted=True)
        produce(kafka_bootstrap, topic, ((f"S{i}", b"x") for i in range(records)))
    reader = StatusReader(kafka_bootstrap, settings, [first])
    try:
        assert reader.read().availability == 2
        reader.follow([first, added])
        assert reader.read().availability == 2 + 3
    finally:
        reader.close()
