"""ensure_topics on a real broker: creates the layout, is idempotent, refuses mismatches."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from streams.errors import BrokerError
from streams.runtime.topics import TopicSpec, ensure_topics, topic_specs
from streams.settings import Settings
from tests.kafka_helpers import consume_all, create_topic, produce

pytestmark = pytest.mark.integration


def prefixed(prefix: str, specs: list[TopicSpec]) -> list[TopicSpec]:
    # The session broker is shared: never claim the real topic names in a test.
    return [dataclasses.replace(spec, name=f"{prefix}.{spec.name}") for spec in specs]


def describe(bootstrap: str, names: list[str]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10)
    partitions = {name: len(metadata.topics[name].partitions) for name in names}
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names])
    configs = {
        resource.name: {key: entry.value for key, entry in future.result(10).items()}
        for resource, future in futures.items()
    }
    return partitions, configs


def test_creates_every_topic_with_its_partitions_and_cleanup_policy(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    settings = Settings(topic_partitions=3, events_retention_ms=-1)
    specs = prefixed(unique_topic_prefix, topic_specs(settings, ["shopify-us", "amazon"]))

    created = ensure_topics(kafka_bootstrap, specs)

    assert created == sorted(spec.name for spec in specs)
    partitions, configs = describe(kafka_bootstrap, created)
    for spec in specs:
        assert partitions[spec.name] == spec.partitions, spec.name
        expected_policy = "compact" if spec.compacted else "delete"
        assert configs[spec.name].get("cleanup.policy") == expected_policy, spec.name
    assert partitions[f"{unique_topic_prefix}.inventory.events"] == 3
    assert partitions[f"{unique_topic_prefix}.inventory.catalog"] == 1
    assert configs[f"{unique_topic_prefix}.inventory.events"].get("retention.ms") == "-1"


def test_second_call_creates_nothing(kafka_bootstrap: str, unique_topic_prefix: str) -> None:
    specs = prefixed(unique_topic_prefix, topic_specs(Settings(topic_partitions=2), ["web"]))
    assert ensure_topics(kafka_bootstrap, specs)
    assert ensure_topics(kafka_bootstrap, specs) == []
    # Adding a channel later creates only its availability topic.
    more = prefixed(unique_topic_prefix, topic_specs(Settings(topic_partitions=2), ["web", "pos"]))
    assert ensure_topics(kafka_bootstrap, more) == [f"{unique_topic_prefix}.availability.pos"]


def test_partition_mismatch_is_refused_before_creating_anything(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    events = create_topic(kafka_bootstrap, f"{unique_topic_prefix}.inventory.events", partitions=3)
    specs = prefixed(unique_topic_prefix, topic_specs(Settings(topic_partitions=2), []))

    with pytest.raises(BrokerError, match=rf"{events} has 3 partitions, expected 2"):
        ensure_topics(kafka_bootstrap, specs)

    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert [name for name in topics if name.startswith(unique_topic_prefix)] == [events]


def test_records_round_trip_through_a_created_topic(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    topic = create_topic(kafka_bootstrap, f"{unique_topic_prefix}.events", partitions=3)
    records = [(f"SKU-{i % 5}", f'{{"n": {i}}}') for i in range(50)]

    produce(kafka_bootstrap, topic, records, headers={"source": "test"})
    messages = consume_all(kafka_bootstrap, topic, timeout=10)

    assert len(messages) == 50
    assert all(m.headers() == [("source", b"test")] for m in messages)
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    values_of: dict[bytes, list[int]] = defaultdict(list)
    for m in messages:
        key, value = m.key(), m.value()
        assert key is not None and value is not None
        partitions_of[key].add(m.partition() or 0)
        values_of[key].append(int(value.decode().split()[1].rstrip("}")))
    # Same key, same partition, produce order kept: what per-SKU processing relies on.
    assert all(len(ps) == 1 for ps in partitions_of.values())
    assert values_of[b"SKU-0"] == list(range(0, 50, 5))
