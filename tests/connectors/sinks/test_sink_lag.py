"""A served sink's consumer lag, as Prometheus reads it from the registry: end offsets minus the
group's committed offsets on the partitions the sink owns (no broker: both are given)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from connectors.sinks import runner
from connectors.sinks.metrics import SinkMetrics
from streams.runtime import offsets
from streams.runtime.offsets import LagProbe

TOPIC = "availability.web"
GROUP = "inventory-streams.sink.web"


class Committed:
    """The group's committed offsets, as the broker answers them (-1001: never committed)."""

    def __init__(self, at: dict[int, int]) -> None:
        self.at = at

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.at[tp.partition]) for tp in partitions]

    def close(self) -> None:
        pass


class Assigned:
    """The sink's consumer: the partitions the group gave it."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in self.partitions]


async def test_the_lag_is_the_records_past_the_committed_offsets_of_owned_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ends = {(TOPIC, 0): 10, (TOPIC, 1): 7, (TOPIC, 2): 50}
    asked: list[dict[str, list[int]]] = []

    def end_offsets(
        bootstrap: str, partitions: dict[str, list[int]], timeout: float = 5.0
    ) -> dict[tuple[str, int], int]:
        asked.append(partitions)
        return {key: end for key, end in ends.items() if key[1] in partitions[key[0]]}

    def probe(bootstrap: str, group: str) -> LagProbe:
        made = LagProbe.__new__(LagProbe)  # no consumer of its own: the offsets are given
        made.bootstrap = bootstrap
        made._group = Committed({0: 4, 1: -1001, 2: 50})  # type: ignore[assignment]
        return made

    monkeypatch.setattr(offsets, "true_end_offsets_many", end_offsets)
    monkeypatch.setattr(runner, "LagProbe", probe)
    registry = CollectorRegistry()
    metrics = SinkMetrics.for_registry(registry)
    stop = asyncio.Event()
    consumer = Assigned([0, 1])  # partition 2 is another sink's: not counted here
    watch = asyncio.create_task(
        runner._watch_lag(consumer, "broker:9092", GROUP, TOPIC, metrics, stop)  # type: ignore[arg-type]
    )
    labels = {"group": GROUP, "topic": TOPIC}

    def lag() -> float | None:
        return registry.get_sample_value("inventory_consumer_lag_records", labels)

    for _ in range(500):  # the first look happens at once, in a thread
        if asked:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await watch  # the look under way is finished and reported before the watch ends
    # partition 0: 10 - 4; partition 1 never committed: all 7 of it
    assert lag() == 13
    assert asked[0] == {TOPIC: [0, 1]}
