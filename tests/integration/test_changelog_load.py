"""A changelog read in bulk on the real broker (read_changelog, behind ChangelogLoadedStore): the
last value of each key, tombstones, and the offset Faust's recovery goes on from."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from streams.runtime.changelog_store import read_changelog
from tests.kafka_helpers import create_topic, produce

pytestmark = pytest.mark.integration


def test_a_changelog_read_in_bulk_gives_each_keys_last_value_up_to_the_watermark(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    topic = create_topic(kafka_bootstrap, f"{unique_topic_prefix}-changelog", partitions=3)
    produce(kafka_bootstrap, topic, [(b"a", b"1"), (b"b", b"1"), (b"c", b"1")], partition=0)
    produce(kafka_bootstrap, topic, [(b"a", b"2"), (b"b", None)], partition=0)
    # the last batch holds many records: Tansu's watermark stops at its first
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 200})
    for i in range(50):
        producer.produce(topic, key=f"{i}".encode(), value=f"x{i}".encode(), partition=1)
    producer.produce(topic, key=b"c", value=b"3", partition=0)
    assert producer.flush(10) == 0

    values, deleted, resume = read_changelog(
        {"bootstrap.servers": kafka_bootstrap},
        topic,
        [0, 1, 2],
        bytes.decode,
        lambda raw: int(raw) if raw.isdigit() else raw.decode(),
    )
    assert values[0] == {"a": 2, "c": 3} and deleted[0] == {"b"}
    # every record below the watermark was read (on Tansu the rest of the batch comes with it)
    assert {f"{i}" for i in range(resume[1] + 1)} <= set(values[1])
    assert all(values[1][f"{i}"] == f"x{i}" for i in range(resume[1] + 1))
    assert resume[0] == 5 and resume[1] in (0, 49)  # Tansu: the last batch's first; Kafka: last
    assert values[2] == {} and deleted[2] == set() and 2 not in resume
