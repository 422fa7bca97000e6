"""The stages' output producer: librdkafka (confluent-kafka) rather than Faust's pure-Python one.

At-least-once: `install(app)` makes Faust's own pre-commit producer flush also flush this producer
and fail the commit when any record was not acknowledged, so offsets are never committed past an
output that is not on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.client import kafka_config
from streams.errors import BrokerError
from streams.runtime.faust_private import wrap_producer_flush

log = logging.getLogger(__name__)


class Outputs:
    def __init__(self, bootstrap: str, linger_ms: float = 2.0) -> None:
        self._producer = Producer(
            {
                **kafka_config(bootstrap),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": linger_ms,
                # a delivery report (a Python callback served by poll) only for a record that
                # failed: flush() still waits for every record, and a failure fails the commit
                "delivery.report.only.error": True,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 200_000,
                # keys hash as Faust's producer and our sources hash them (Java murmur2)
                "partitioner": "murmur2_random",
                "logger": logging.getLogger("streams.outputs.librdkafka"),
                # one callback for every record: cheaper per produce() than one per call
                "on_delivery": self._delivered,
            }
        )
        self._failed: list[str] = []
        # e.g. deferred table writes; awaited, so a long one can let the stages run in between
        self.before_flush: list[Callable[[], Awaitable[None]]] = []
        self.after_flush: list[Callable[[], bool]] = []  # True: sent more, flush Faust again

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int = -1,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        timestamp: int = 0,  # epoch ms; 0: now
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value, key, partition=partition, headers=headers, timestamp=timestamp
                )
                return
            except BufferError:  # backpressure: wait for acknowledgements, never grow unbounded
                self._producer.poll(0.05)

    def poll(self) -> None:
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}: {err}")

    async def flush(self) -> None:
        remaining = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, 30)
        if remaining or self._failed:
            failed, self._failed = self._failed[:5], []
            raise BrokerError(f"{remaining} outputs unsent, failures: {failed}")

    def install(self, app: Any) -> None:
        """Hook this producer's flush into Faust's flush-before-commit."""

        async def flush(faust_flush: Callable[[], Awaitable[None]]) -> None:
            for hook in self.before_flush:
                await hook()
            await self.flush()
            await faust_flush()
            if any([hook() for hook in self.after_flush]):
                await self.flush()
                await faust_flush()

        wrap_producer_flush(app, flush)
