"""A channel's sink on Kafka: availability.<channel> is consumed with manual commits, an offset is
committed only after the channel acknowledged its record (or a newer one of the same key), and
records the channel refuses for good are written to inventory.dlq before their offset moves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from connectors.sinks.amazon import AmazonSink
from connectors.sinks.base import Sink
from connectors.sinks.engine import DeadLetterHook, SinkEngine
from connectors.sinks.metrics import SinkMetrics
from connectors.sinks.shopify import ShopifySink
from connectors.sinks.webhook import WebhookSink
from streams.client import kafka_config
from streams.codec import Codec, make_codec
from streams.core.catalog import Channel
from streams.core.models import Availability
from streams.errors import BrokerError, InventoryError
from streams.runtime.offsets import LagProbe
from streams.runtime.producer import dead_letter_record
from streams.runtime.progress import StageProgress
from streams.runtime.topics import DLQ, availability_topic
from streams.settings import Settings

log = logging.getLogger(__name__)

POLL_RECORDS = 500  # records per consume() call
LAG_SECONDS = 5.0  # how often a served sink reads its consumer group's lag
COMMIT_EVERY = 0.2  # seconds between offset commits while records keep coming

SINK_TYPES: dict[str, type[ShopifySink] | type[AmazonSink] | type[WebhookSink]] = {
    "shopify": ShopifySink,
    "amazon": AmazonSink,
}


def make_sink(channel: Channel, metrics: SinkMetrics) -> Sink:
    """The adapter for the channel's type; any type without one is a signed webhook."""
    return SINK_TYPES.get(channel.type, WebhookSink)(channel, metrics)


def group_id(settings: Settings, channel: Channel) -> str:
    return f"{settings.app_id}.sink.{channel.id}"


class _DeadLetters:
    """Writes DeadLetter records to inventory.dlq and waits for the broker's acknowledgement."""

    def __init__(self, bootstrap: str, codec: Codec, channel: Channel) -> None:
        self._producer = Producer({**kafka_config(bootstrap), "linger.ms": 5, "log_level": 0})
        self._codec = codec
        self._source = f"sink:{channel.id}"
        self._topic = availability_topic(channel.id)

    async def write(
        self,
        original: bytes,
        reason: str,
        key: bytes | None,
        partition: int | None,
        offset: int | None,
    ) -> None:
        letter = dead_letter_record(
            original,
            self._source,
            reason,
            key=key,
            topic=self._topic,
            partition=partition,
            offset=offset,
        )
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err.str())

        self._producer.produce(
            DLQ, key=key, value=self._codec.encode(letter, DLQ), on_delivery=delivered
        )
        left = await asyncio.to_thread(self._producer.flush, 10.0)
        if left or errors:
            raise BrokerError(f"dead letter not written to {DLQ}: {errors or 'timed out'}")

    def hook(self) -> DeadLetterHook:
        async def dead_letter(
            record: Availability,
            raw: bytes | None,
            partition: int | None,
            offset: int | None,
            reason: str,
        ) -> None:
            original = raw if raw is not None else self._codec.encode(record, self._topic)
            await self.write(original, reason, record.channel_sku.encode(), partition, offset)

        return dead_letter

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.flush, 10.0)


async def run_sink(
    channel: Channel,
    settings: Settings,
    bootstrap: str,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    sink: Sink | None = None,
    codec: Codec | None = None,
    on_ack: Callable[[Availability], None] | None = None,
) -> SinkEngine:
    """Deliver availability.<channel.id> to the channel until `stop` is set.

    Runs in the caller's event loop (blocking Kafka calls go to worker threads); start one task
    per channel. Metrics go to `registry` (a private one if None). Returns the engine at the end,
    for its counters. `on_ack` is called with every record the channel acknowledged (e.g. for a
    status view). Raises InvalidSinkConfig when the channel's connector settings are wrong.
    """
    metrics = SinkMetrics.for_registry(registry or CollectorRegistry())
    codec = codec or make_codec(settings)
    sink = sink or make_sink(channel, metrics)
    topic = availability_topic(channel.id)
    dead_letters = _DeadLetters(bootstrap, codec, channel)
    engine = SinkEngine(sink, metrics=metrics, dead_letter=dead_letters.hook(), on_ack=on_ack)
    consumer = Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": group_id(settings, channel),
            "client.id": f"{settings.app_id}-sink-{channel.id}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.consumer_session_timeout_ms,
            # Tansu answers a fetch only when its wait is over, even if records arrive meanwhile:
            # librdkafka's default 500 ms would be added to a burst's last records.
            "fetch.wait.max.ms": settings.consumer_fetch_max_wait_ms,
            "log_level": 0,
        }
    )
    revoked: list[int] = []
    lock = threading.Lock()

    def on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with lock:  # runs in the consume() thread: hand the news to the event loop's side
            revoked.extend(tp.partition for tp in partitions)

    consumer.subscribe([topic], on_revoke=on_revoke)
    sending = asyncio.Event()
    sender = asyncio.create_task(engine.run(sending), name=f"sink-{channel.id}")
    group = group_id(settings, channel)
    lag_done = asyncio.Event()  # its own: the loop below may end on an error, not on `stop`
    lag = (  # only where the metrics are served: each look costs the broker a few requests
        asyncio.create_task(_watch_lag(consumer, bootstrap, group, topic, metrics, lag_done))
        if registry is not None
        else None
    )
    next_commit = 0.0
    log.info("sink %s: delivering %s as %s", channel.id, topic, group_id(settings, channel))
    try:
        while not stop.is_set():
            messages = await asyncio.to_thread(consumer.consume, POLL_RECORDS, 0.1)
            with lock:
                gone, revoked[:] = list(revoked), []
            if gone:
                engine.offsets.forget(gone)
            # The record's own timestamp, on the engine's clock: its staleness starts there.
            skew = time.monotonic() - time.time()
            for message in messages:
                unreadable = _take(message, engine, codec, topic, skew)
                if unreadable is not None:
                    partition, offset = message.partition(), message.offset()
                    assert partition is not None and offset is not None
                    await dead_letters.write(
                        message.value() or b"", unreadable, message.key(), partition, offset
                    )
                    engine.skip(partition, offset)
            caught_up = len(messages) < POLL_RECORDS  # the poll found the end of the log
            if caught_up:
                engine.caught_up()
            # A commit is a broker round trip that holds up the next poll: during a burst, one
            # every COMMIT_EVERY seconds; at once when caught up.
            if caught_up or time.monotonic() >= next_commit:
                await _commit(consumer, engine, topic)
                next_commit = time.monotonic() + COMMIT_EVERY
            if sender.done():
                sender.result()  # the send loop died: surface its error
                raise InventoryError(f"sink {channel.id}: the send loop stopped")
    finally:
        sending.set()
        await sender
        if lag is not None:
            lag_done.set()
            await lag
        await _commit(consumer, engine, topic)
        await asyncio.to_thread(consumer.close)
        await dead_letters.close()
        await sink.close()
    return engine


async def _watch_lag(
    consumer: Consumer,
    bootstrap: str,
    group: str,
    topic: str,
    metrics: SinkMetrics,
    stop: asyncio.Event,
) -> None:
    """Every LAG_SECONDS until `stop`: the group's lag on the partitions this sink owns."""
    probe = LagProbe(bootstrap, group)
    gauge = metrics.consumer_lag.labels(group, topic)
    try:
        while not stop.is_set():
            mine = [(topic, tp.partition) for tp in consumer.assignment()]
            try:
                behind = await asyncio.to_thread(probe.behind, mine)
                gauge.set(behind.get(topic, 0))
            except Exception as error:  # a broker hiccup: the next look will do
                log.debug("sink lag of %s not read: %s", topic, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_SECONDS)
    finally:
        await asyncio.to_thread(probe.close)


def _take(
    message: Message, engine: SinkEngine, codec: Codec, topic: str, skew: float
) -> str | None:
    """Offer one consumed record to the engine; the dead-letter reason if it cannot be read.

    Synchronous on purpose: it runs for every record read, and a burst is tens of thousands.
    """
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("sink %s: consumer error %s", engine.channel_id, error.str())
        return None
    partition, offset = message.partition(), message.offset()
    assert partition is not None and offset is not None
    try:
        record = codec.decode(message.value() or b"", topic)
        if not isinstance(record, Availability):
            raise InventoryError(f"expected an Availability record, got {type(record).__name__}")
    except InventoryError as failure:
        return f"sink {engine.channel_id}: cannot read record: {failure}"
    kind, millis = message.timestamp()
    now = time.monotonic()
    received_at = min(now, skew + millis / 1000) if kind and millis > 0 else now
    engine.offer(
        record, partition=partition, offset=offset, raw=message.value(), received_at=received_at
    )
    return None


async def _commit(consumer: Consumer, engine: SinkEngine, topic: str) -> None:
    positions = engine.committable()
    if not positions:
        return
    offsets = [TopicPartition(topic, p, position) for p, position in positions.items()]
    try:
        await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
    except Exception as error:  # e.g. a rebalance took the partition: its new owner resends
        log.warning("sink %s: commit failed: %s", engine.channel_id, error)
        return
    engine.offsets.mark_committed(positions)


# ---- resync ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResyncReport:
    channel: str
    records: int  # distinct channel_skus read from the compacted topic
    acked: int
    dead_lettered: int
    unreadable: int
    flushes: int  # sink flushes (a flush is one API call, or one feed for a bulk path)
    seconds: float


def read_latest(
    bootstrap: str,
    topic: str,
    codec: Codec,
    timeout: float = 60.0,
    progress: StageProgress | None = None,
) -> tuple[dict[str, Availability], int]:
    """The newest record per channel_sku in `topic` as of now, and how many were unreadable.

    Reads past the reported high watermarks until a poll comes back empty: some brokers (Tansu)
    report the base offset of the last batch + 1 there, short of the real end. `progress` is told
    the records read of those the watermarks announced.
    """
    progress = progress or StageProgress(enabled=False)
    consumer = Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"resync-{topic}-{time.time_ns()}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    latest: dict[str, Availability] = {}
    unreadable = 0
    try:
        described = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if described is None or described.error is not None:
            raise BrokerError(f"topic {topic} does not exist")
        ends: dict[int, int] = {}
        starts = []
        for p in described.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        progress.stage(f"reading {topic}", sum(ends[tp.partition] - tp.offset for tp in starts))
        if not starts:
            return latest, unreadable
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        while True:
            messages = consumer.consume(1000, 0.2)
            if not messages and not ends:
                break
            progress.advance(len(messages))
            for message in messages:
                if message.error() is not None:
                    continue
                p, o = message.partition(), message.offset()
                if p in ends and o is not None and o >= ends[p] - 1:
                    del ends[p]
                try:
                    record = codec.decode(message.value() or b"", topic)
                except InventoryError:
                    unreadable += 1
                    continue
                if isinstance(record, Availability):
                    held = latest.get(record.channel_sku)
                    if held is None or record.version > held.version:
                        latest[record.channel_sku] = record
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} did not reach its end in {timeout:g}s")
    finally:
        consumer.close()
    return latest, unreadable


async def resync_async(
    channel: Channel,
    settings: Settings,
    bootstrap: str,
    *,
    registry: CollectorRegistry | None = None,
    sink: Sink | None = None,
    progress: StageProgress | None = None,
) -> ResyncReport:
    """Push the full current availability of a channel (latest per key of the compacted topic).

    Sends every value whatever was acknowledged before: a resync repairs drift on the channel's
    side. Large catalogs on a channel with a bulk path (Amazon) go through its feed. `progress` is
    told the records read, then the records the channel acknowledged (or that were dead-lettered).
    """
    progress = progress or StageProgress(enabled=False)
    started = time.monotonic()
    metrics = SinkMetrics.for_registry(registry or CollectorRegistry())
    codec = make_codec(settings)
    sink = sink or make_sink(channel, metrics)
    topic = availability_topic(channel.id)
    latest, unreadable = await asyncio.to_thread(
        read_latest, bootstrap, topic, codec, progress=progress
    )
    dead_letters = _DeadLetters(bootstrap, codec, channel)
    engine = SinkEngine(sink, metrics=metrics, dead_letter=dead_letters.hook())
    progress.stage(f"sending to {channel.id}", len(latest))

    async def report_sent() -> None:
        while True:
            progress.update(engine.acked + engine.dead_lettered)
            await asyncio.sleep(0.1)

    reporter = asyncio.create_task(report_sent())
    try:
        for record in latest.values():
            engine.offer(record)
        engine.end_of_input()
        await engine.run_until_idle()
    finally:
        reporter.cancel()
        progress.update(engine.acked + engine.dead_lettered)
        await dead_letters.close()
        await sink.close()
    return ResyncReport(
        channel=channel.id,
        records=len(latest),
        acked=engine.acked,
        dead_lettered=engine.dead_lettered,
        unreadable=unreadable,
        flushes=engine.flushes,
        seconds=round(time.monotonic() - started, 3),
    )


def resync(
    channel: Channel, settings: Settings, bootstrap: str, progress: StageProgress | None = None
) -> ResyncReport:
    """Blocking form of resync_async for the command line."""
    return asyncio.run(resync_async(channel, settings, bootstrap, progress=progress))
