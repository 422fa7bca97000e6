"""The one way sources write to Kafka: idempotent (enable.idempotence, acks=all), bounded, counted.

Every record handed to a SourceProducer is acknowledged by the broker or counted as failed, never
dropped: `sent == acked + failed + pending`, and `flush()` waits for pending to reach 0. A full
buffer blocks the caller (or, for async callers, raises Backpressure after a deadline) instead of
growing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from streams.client import kafka_config
from streams.codec import Codec, make_codec
from streams.core.keys import event_key
from streams.core.models import DeadLetter, Event
from streams.errors import Backpressure, BrokerError, DeliveryFailed
from streams.runtime.topics import DLQ, EVENTS
from streams.settings import Settings, get_settings

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
_POLL_EVERY = 1000  # serve delivery reports regularly so the buffer drains while we produce
_BACKOFF_SECONDS = 0.02


class ProducerClient(Protocol):
    """The part of confluent_kafka.Producer a source uses (tests pass an in-memory fake)."""

    def produce(
        self,
        topic: str,
        value: bytes | None = ...,
        key: bytes | None = ...,
        *,
        on_delivery: DeliveryCallback | None = ...,
        headers: list[tuple[str, str | bytes | None]] | None = ...,
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...

    def __len__(self) -> int: ...


def dead_letter_record(
    original: bytes,
    source: str,
    reason: str,
    *,
    key: bytes | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> DeadLetter:
    """Input rejected now, as every dead letter is built (sources, stages, sinks): the bytes
    exactly as received, who sent them, why, and where it was read when it came from a topic."""
    return DeadLetter(
        original=original,
        source=source,
        reason=reason,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        rejected_at=datetime.now(UTC),
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded record, ready to produce (encoding errors surface before anything is sent)."""

    topic: str
    key: bytes | None
    value: bytes
    dead_letter: bool
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """What the producer was given and what the broker acknowledged, since it was created."""

    events_sent: int = 0
    events_acked: int = 0
    dead_letters_sent: int = 0
    dead_letters_acked: int = 0
    failed: int = 0
    backpressure_waits: int = 0

    @property
    def sent(self) -> int:
        return self.events_sent + self.dead_letters_sent

    @property
    def pending(self) -> int:
        return self.sent - self.events_acked - self.dead_letters_acked - self.failed

    def __sub__(self, other: DeliveryCounts) -> DeliveryCounts:
        return DeliveryCounts(
            *(getattr(self, name) - getattr(other, name) for name in self.__slots__)
        )


def producer_config(
    bootstrap: str,
    *,
    max_buffered_messages: int = 100_000,
    max_buffered_kbytes: int = 64 * 1024,
    linger_ms: int = 20,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka settings for a source: no duplicates on retry, nothing lost on a failover."""
    return {
        **kafka_config(bootstrap),
        "enable.idempotence": True,  # retries never duplicate or reorder within a partition
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        # Java-compatible key hashing, as Faust/aiokafka use: a SKU lands on the same partition
        # whichever client produced it, so the stream agents see all of its events in order.
        "partitioner": "murmur2_random",
        "linger.ms": linger_ms,
        "batch.num.messages": 10_000,
        # The backpressure bound: produce() raises BufferError beyond it and we wait for acks.
        "queue.buffering.max.messages": max_buffered_messages,
        "queue.buffering.max.kbytes": max_buffered_kbytes,
        "logger": logging.getLogger("connectors.sources.librdkafka"),
        **(extra or {}),
    }


class SourceProducer:
    """Produces validated events (keyed by `event_key`) and dead letters, and accounts for both."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        codec: Codec | None = None,
        client: ProducerClient | None = None,
        events_topic: str = EVENTS,
        dlq_topic: str = DLQ,
        max_buffered_messages: int = 100_000,
        linger_ms: int = 20,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.codec = codec or make_codec(settings)
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        if client is None:
            bootstrap = bootstrap or settings.kafka_bootstrap_servers
            if not bootstrap:
                raise BrokerError(
                    "no Kafka cluster to produce to: set KAFKA_BOOTSTRAP_SERVERS "
                    "(or run the sources inside `inventory-streams up`)"
                )
            client = Producer(
                producer_config(
                    bootstrap,
                    max_buffered_messages=max_buffered_messages,
                    linger_ms=linger_ms,
                    extra=config,
                )
            )
        self._client = client
        self._lock = threading.Lock()
        self._counts = {name: 0 for name in DeliveryCounts.__slots__}
        self._errors: list[str] = []
        self._since_poll = 0
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()

    # ---- encoding (raises EncodingError before anything is sent) -------------------------------

    def encode_event(
        self,
        event: Event,
        key: str | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> Outgoing:
        """`key` overrides `event_key(event)` (the reservation API resolves listings to SKUs)."""
        value = self.codec.encode(event, self.events_topic)
        key_bytes = (key or event_key(event)).encode("utf-8")
        return Outgoing(self.events_topic, key_bytes, value, False, headers)

    def encode_dead_letter(
        self, original: bytes, source: str, reason: str, *, key: bytes | None = None
    ) -> Outgoing:
        letter = dead_letter_record(original, source, reason, key=key)
        return Outgoing(self.dlq_topic, key, self.codec.encode(letter, self.dlq_topic), True)

    # ---- blocking producing (batch importers) --------------------------------------------------

    def send(self, out: Outgoing) -> None:
        """Hand one record to the producer; while its buffer is full, wait for acknowledgements."""
        while True:
            try:
                self._client.produce(out.topic, out.value, out.key, on_delivery=self._delivered)
                break
            except BufferError:
                self._waited()
                self._client.poll(_BACKOFF_SECONDS)
        self._sent(out)
        self._since_poll += 1
        if self._since_poll >= _POLL_EVERY:
            self._since_poll = 0
            self._client.poll(0)

    def send_event(self, event: Event) -> None:
        self.send(self.encode_event(event))

    def dead_letter(
        self, original: bytes, source: str, reason: str, *, key: bytes | None = None
    ) -> None:
        """Rejected input to the DLQ: the bytes exactly as received, who sent them, and why."""
        self.send(self.encode_dead_letter(original, source, reason, key=key))

    # ---- async producing (webhook receiver): returns once the broker acknowledged -------------

    async def send_async(
        self, records: Sequence[Outgoing], *, deadline: float = 10.0
    ) -> list[tuple[int, int]]:
        """Produce `records` and wait for every acknowledgement; (partition, offset) of each, in
        the order the broker acknowledged them.

        Raises Backpressure when the buffer stays full for `deadline` seconds (the HTTP layer
        answers 503 so the sender retries later) and DeliveryFailed when the broker refused one.
        """
        if not records:
            return []
        self.start_polling()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[str]] = loop.create_future()
        waiting = [len(records)]
        errors: list[str] = []
        stored: list[tuple[int, int]] = []

        def settle(err: KafkaError | None, partition: int | None, offset: int | None) -> None:
            if err is not None:
                errors.append(err.str())
            else:
                stored.append(
                    (-1 if partition is None else partition, -1 if offset is None else offset)
                )
            waiting[0] -= 1
            if waiting[0] == 0 and not done.done():
                done.set_result(errors)

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, msg)
            with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(settle, err, msg.partition(), msg.offset())

        give_up = time.monotonic() + deadline
        for out in records:
            while True:
                try:
                    headers: list[tuple[str, str | bytes | None]] = list(out.headers)
                    self._client.produce(
                        out.topic,
                        out.value,
                        out.key,
                        on_delivery=on_delivery,
                        headers=headers or None,
                    )
                    break
                except BufferError:
                    self._waited()
                    if time.monotonic() > give_up:
                        # Those already handed over are still delivered; the sender's retry
                        # re-sends them with the same event ids, which the stream core ignores.
                        raise Backpressure(
                            f"the producer buffer stayed full for {deadline:g} s"
                        ) from None
                    await asyncio.sleep(_BACKOFF_SECONDS)
            self._sent(out)
        failures = await done
        if failures:
            raise DeliveryFailed(
                f"the broker refused {len(failures)} of {len(records)} records: {failures[0]}"
            )
        return stored

    # ---- delivery reports ----------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> int:
        return self._client.poll(timeout)

    def flush(self, timeout: float = 60.0) -> DeliveryCounts:
        """Wait until every record handed over is acknowledged; DeliveryFailed if some are not."""
        give_up = time.monotonic() + timeout
        while len(self._client) > 0 and time.monotonic() < give_up:
            self._client.flush(min(1.0, max(0.0, give_up - time.monotonic())))
        counts = self.counts()
        if len(self._client) > 0:
            raise DeliveryFailed(
                f"{len(self._client)} records not acknowledged by the broker within {timeout:g} s"
            )
        return counts

    def counts(self) -> DeliveryCounts:
        with self._lock:
            return DeliveryCounts(**self._counts)

    def errors(self) -> list[str]:
        """The first delivery errors (the broker's own words), for reports."""
        with self._lock:
            return list(self._errors)

    def start_polling(self) -> None:
        """Serve delivery reports from a background thread (async callers never block on poll)."""
        if self._poller is not None and self._poller.is_alive():
            return
        self._stop_polling.clear()
        self._poller = threading.Thread(
            target=self._poll_forever, name="source-producer-poll", daemon=True
        )
        self._poller.start()

    def stop_polling(self) -> None:
        if self._poller is not None:
            self._stop_polling.set()
            self._poller.join(timeout=5.0)
            self._poller = None

    @contextmanager
    def polling(self) -> Iterator[SourceProducer]:
        self.start_polling()
        try:
            yield self
        finally:
            self.stop_polling()

    async def polling_while_serving(self, _app: Any) -> AsyncIterator[None]:
        """An aiohttp cleanup context: delivery reports are served while the app runs."""
        with self.polling():
            yield

    def close(self, timeout: float = 30.0) -> DeliveryCounts:
        """Flush what is pending and stop the poller; the counts are final."""
        self.stop_polling()
        return self.flush(timeout)

    def _poll_forever(self) -> None:
        while not self._stop_polling.is_set():
            self._client.poll(0.05)

    def _sent(self, out: Outgoing) -> None:
        with self._lock:
            self._counts["dead_letters_sent" if out.dead_letter else "events_sent"] += 1

    def _waited(self) -> None:
        with self._lock:
            self._counts["backpressure_waits"] += 1

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is not None:
                self._counts["failed"] += 1
                if len(self._errors) < 20:
                    self._errors.append(f"{msg.topic()}: {err.str()}")
            elif msg.topic() == self.dlq_topic:
                self._counts["dead_letters_acked"] += 1
            else:
                self._counts["events_acked"] += 1
        if err is not None:
            log.error("delivery to %s failed: %s", msg.topic(), err.str())
