"""The workers' catalog check survives a broker out of reach: it says "no change" and asks again."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streams.runtime.catalog_store import CatalogFeed


class _Consumer:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def get_watermark_offsets(self, *_: Any, **__: Any) -> tuple[int, int]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return 0, answer


def test_a_broker_out_of_reach_is_no_change_and_the_next_check_sees_the_catalog() -> None:
    feed = CatalogFeed("127.0.0.1:9")
    timed_out = KafkaException(KafkaError(KafkaError._TIMED_OUT))
    feed._consumer = _Consumer([timed_out, 3, 3, timed_out, 4])  # type: ignore[assignment]
    assert feed.changed() is False  # (bench/faults.py's broker-pause: the worker exited here)
    assert feed.changed() is True  # the first answer still counts as the first call
    assert feed.changed() is False
    assert feed.changed() is False
    assert feed.changed() is True
