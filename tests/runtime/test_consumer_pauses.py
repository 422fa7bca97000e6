"""Faust's pauses reach aiokafka: partitions Faust does not ask for are not fetched (no broker)."""

from __future__ import annotations

import aiokafka
from faust.types import TP

from streams.runtime.faust_private import tune_fetch_wait


async def test_partitions_faust_does_not_ask_for_are_paused_and_resumed_when_it_asks() -> None:
    tune_fetch_wait(20)
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    events = [aiokafka.TopicPartition("inventory.events", p) for p in range(2)]
    changelog = aiokafka.TopicPartition("inventory-streams-skus-changelog", 0)
    consumer.assign([*events, changelog])
    try:
        # Faust passes its own TP named tuples: equal to aiokafka's, not accepted by aiokafka
        consumer._pause_all_but({TP("inventory.events", 0), TP("inventory.events", 1)})
        assert consumer.paused() == {changelog}

        consumer._pause_all_but({TP("inventory.events", 1)})  # e.g. a full stream buffer
        assert consumer.paused() == {changelog, events[0]}

        consumer._pause_all_but(set())  # recovery or a rebalance: nothing wanted
        assert consumer.paused() == {*events, changelog}

        consumer._pause_all_but({TP("inventory.events", 0)})
        assert consumer.paused() == {changelog, events[1]}

        consumer._pause_all_but({TP(tp.topic, tp.partition) for tp in [*events, changelog]})
        assert consumer.paused() == set()
    finally:
        await consumer.stop()
