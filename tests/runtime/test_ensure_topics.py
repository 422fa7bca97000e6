"""ensure_topics when Kafka is still deleting a topic: "already exists", yet no metadata lists it
(a rebuild deletes and recreates the internal topics, and Kafka 2.3 refuses to create a topic
still marked for deletion). It must be created once the deletion is done, not taken as made."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.errors import BrokerError
from streams.runtime import topics
from streams.runtime.topics import TopicSpec, ensure_topics


class DeletingAdmin:
    """An admin client over a broker that still deletes `name` for the first `refusals` creates."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.topics: dict[str, int] = {}
        self.creates = 0

    def list_topics(self, timeout: float) -> Any:
        listed = {
            n: SimpleNamespace(partitions=dict.fromkeys(range(p))) for n, p in self.topics.items()
        }
        return SimpleNamespace(topics=listed)

    def describe_configs(self, resources: Any, request_timeout: float) -> dict[Any, Any]:
        return {}

    def create_topics(self, new: list[Any], **kwargs: Any) -> dict[str, Future[None]]:
        self.creates += 1
        out: dict[str, Future[None]] = {}
        for topic in new:
            future: Future[None] = Future()
            if self.refusals > 0:
                self.refusals -= 1
                error = KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, "marked for deletion")
                future.set_exception(KafkaException(error))
            else:
                self.topics[topic.topic] = topic.num_partitions
                future.set_result(None)
            out[topic.topic] = future
        return out


def test_a_topic_still_being_deleted_is_created_once_it_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = DeletingAdmin(refusals=3)
    monkeypatch.setattr(topics, "AdminClient", lambda config: admin)
    assert ensure_topics("broker:9092", [TopicSpec("skus-changelog", 4)]) == ["skus-changelog"]
    assert admin.topics == {"skus-changelog": 4} and admin.creates == 4


def test_a_deletion_that_never_ends_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "AdminClient", lambda config: DeletingAdmin(refusals=10**6))
    with pytest.raises(BrokerError, match="skus-changelog: still being deleted"):
        ensure_topics("broker:9092", [TopicSpec("skus-changelog", 4)], timeout=0.5)
