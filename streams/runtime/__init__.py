"""Runtime glue around the pure core: the Kafka cluster (configured or embedded) and its topics."""

from __future__ import annotations

from streams.runtime.broker import (
    Cluster,
    EmbeddedBroker,
    EmbeddedKafka,
    embedded_broker,
    free_port,
    kafka_cluster,
    kafka_unavailable,
    open_cluster,
    tansu_binary,
    wait_for_kafka,
)
from streams.runtime.topics import TopicSpec, availability_topic, ensure_topics, topic_specs

__all__ = [
    "Cluster",
    "EmbeddedBroker",
    "EmbeddedKafka",
    "TopicSpec",
    "availability_topic",
    "embedded_broker",
    "ensure_topics",
    "free_port",
    "kafka_cluster",
    "kafka_unavailable",
    "open_cluster",
    "tansu_binary",
    "topic_specs",
    "wait_for_kafka",
]
