"""`inventory-streams replay`: rebuild state from the event log, and re-drive dead letters.

A rebuild is stop-the-world: it refuses while the workers' consumer group is detectably active,
and changes nothing until every start offset is known. A re-drive sends each dead letter at most
once per committed position of its own consumer group on inventory.dlq (and even a resend changes
nothing: the core ignores an event id it has seen).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.client import kafka_config
from streams.core.catalog import Catalog
from streams.core.check import check_event
from streams.core.keys import event_key
from streams.core.models import DeadLetter, Event, parse_event_json
from streams.errors import BrokerError, EncodingError, InvalidEvent, InventoryError
from streams.runtime.offsets import true_end_offsets
from streams.runtime.progress import StageProgress
from streams.runtime.topics import (
    COMMANDS,
    DLQ,
    EVENTS,
    RESERVATION_DECISIONS,
    TABLES,
    changelog_topic,
    ensure_topics,
    topic_specs,
)
from streams.settings import Settings

INTERNAL_TOPICS = (COMMANDS, RESERVATION_DECISIONS)
_PROBE = "inventory-streams-replay-probe"
_BUSY_STATES = ("STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE")


class GroupActive(InventoryError):
    """The stream workers' consumer group has (or may have) live members."""


@dataclass(frozen=True)
class Start:
    """Where to start: `beginning`, an `offset` (per partition, or one for all) or a `time`."""

    beginning: bool = False
    offsets: dict[int, int] | int | None = None
    time: datetime | None = None


def parse_offsets(text: str) -> dict[int, int] | int:
    """`120` (every partition) or `0:120,1:98` (per partition)."""
    try:
        if ":" not in text:
            value = int(text)
            if value < 0:
                raise ValueError
            return value
        out = {}
        for part in text.split(","):
            p, _, o = part.partition(":")
            out[int(p)] = int(o)
            if out[int(p)] < 0 or int(p) < 0:
                raise ValueError
        return out
    except ValueError:
        raise InventoryError(
            f"--from-offset {text!r}: give one offset for every partition (120) or "
            "partition:offset pairs (0:120,1:98), none negative"
        ) from None


def _consumer(bootstrap: str, group: str | None = None) -> Consumer:
    return Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": group or f"replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )


def _partitions(bootstrap: str, topic: str) -> list[int]:
    admin = AdminClient({**kafka_config(bootstrap), "log_level": 0})
    metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise InventoryError(f"topic {topic!r} does not exist")
    return sorted(metadata.partitions)


def start_offsets(
    bootstrap: str, topic: str, start: Start, progress: StageProgress | None = None
) -> dict[int, int]:
    """The first offset to read in each partition of `topic`, clamped to what the log holds.

    A time is found by scanning record timestamps (when the record was written to the log, not
    its `occurred_at`): the broker's offsets-for-times is imprecise on Tansu. `progress` is told
    how far the scan is.
    """
    partitions = _partitions(bootstrap, topic)
    ends = true_end_offsets(bootstrap, topic, partitions)
    consumer = _consumer(bootstrap)
    try:
        lows = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
            for p in partitions
        }
        if start.time is not None:
            return _first_at_or_after(
                consumer, topic, lows, ends, start.time, progress or StageProgress(enabled=False)
            )
        if start.offsets is None:
            return lows
        if isinstance(start.offsets, int):
            wanted = dict.fromkeys(partitions, start.offsets)
        else:
            unknown = sorted(set(start.offsets) - set(partitions))
            if unknown:
                raise InventoryError(f"{topic} has no partition {unknown[0]}")
            wanted = {p: start.offsets.get(p, lows[p]) for p in partitions}
        return {p: min(max(wanted[p], lows[p]), ends[p]) for p in partitions}
    finally:
        consumer.close()


def _first_at_or_after(
    consumer: Consumer,
    topic: str,
    lows: dict[int, int],
    ends: dict[int, int],
    at: datetime,
    progress: StageProgress,
) -> dict[int, int]:
    wanted_ms = int(at.timestamp() * 1000)
    found = dict(ends)
    todo = {p for p in lows if lows[p] < ends[p]}
    # at most every record up to the end; a partition whose start is found counts as scanned
    scanned = dict(lows)
    progress.stage(f"scanning {topic} for {at.isoformat()}", sum(ends[p] - lows[p] for p in lows))
    consumer.assign([TopicPartition(topic, p, lows[p]) for p in todo])
    deadline = time.monotonic() + 300
    while todo and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        if partition not in todo:
            continue
        _, ts = message.timestamp()
        scanned[partition] = offset + 1
        if ts >= wanted_ms:
            found[partition] = offset
            todo.discard(partition)
            consumer.pause([TopicPartition(topic, partition)])
            scanned[partition] = ends[partition]
        elif offset + 1 >= ends[partition]:
            todo.discard(partition)
        progress.update(sum(min(scanned[p], ends[p]) - lows[p] for p in lows))
    if todo:
        raise BrokerError(f"could not scan {topic} for timestamps within 300 s")
    return found


def check_stopped(bootstrap: str, group: str, wait: float) -> None:
    """GroupActive unless `group` has no live member (waiting up to `wait` s for one to leave).

    Kafka lists the members; Tansu lists none for Faust's workers but keeps the group STABLE until
    the last worker's session expired, so a STABLE group counts as active.
    """
    admin = AdminClient({**kafka_config(bootstrap), "log_level": 0})
    deadline = time.monotonic() + wait
    probe: Consumer | None = None
    try:
        while True:
            state = _group_state(admin, group)
            if state not in _BUSY_STATES:
                return
            if time.monotonic() >= deadline:
                raise GroupActive(
                    f"consumer group {group} is {state}: workers are running, or stopped less "
                    "than a session timeout ago; stop every worker and `up`, then retry"
                )
            # Tansu forgets a stopped member only when someone else joins: ask to join. A live
            # Faust worker keeps the group on its own protocol, so the probe is refused and the
            # worker is not disturbed; once no worker is left, the probe's join empties the group.
            if probe is None:
                probe = Consumer(
                    {
                        **kafka_config(bootstrap),
                        "group.id": group,
                        "enable.auto.commit": False,
                        "session.timeout.ms": 6000,
                        "client.id": _PROBE,
                        "log_level": 0,
                    }
                )
                probe.subscribe([EVENTS], on_assign=lambda consumer, parts: consumer.unsubscribe())
            probe.poll(1.0)
    finally:
        if probe is not None:
            probe.close()


def _group_state(admin: AdminClient, group: str) -> str:
    """The group's state; GroupActive when it lists members."""
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException as error:
        raise BrokerError(f"cannot describe consumer group {group}: {error}") from None
    members = [m for m in description.members if m.client_id != _PROBE]
    if members:
        hosts = sorted({m.host for m in members})
        raise GroupActive(
            f"consumer group {group} has {len(members)} active members "
            f"({', '.join(hosts)}): stop every worker and `up` first"
        )
    if description.members:  # only our probe, on its way out
        return "PREPARING_REBALANCE"
    return str(description.state.name)


def _commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    if not offsets:
        return
    consumer = _consumer(bootstrap, group)
    try:
        result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as error:
        raise BrokerError(f"cannot commit offsets of group {group}: {error}") from None
    finally:
        consumer.close()
    failed = [tp for tp in result or [] if tp.error is not None]
    if failed:
        raise BrokerError(f"cannot commit offsets of group {group}: {failed[0].error}")


@dataclass
class RebuildReport:
    start: dict[int, int]
    recreated: list[str]
    reset: list[str] = field(default_factory=list)


def rebuild(
    settings: Settings,
    bootstrap: str,
    start: Start,
    *,
    wait: float = 30.0,
    progress: StageProgress | None = None,
) -> RebuildReport:
    """Delete and recreate internal and changelog topics; point the group at `start` on EVENTS.

    `progress` is told how far the search for a --from-time start is, and the steps taken."""
    progress = progress or StageProgress(enabled=False)
    group = settings.app_id
    check_stopped(bootstrap, group, wait)
    offsets = start_offsets(bootstrap, EVENTS, start, progress)  # before anything is changed
    doomed = [*INTERNAL_TOPICS, *(changelog_topic(group, t) for t in TABLES)]
    progress.stage("recreating internal topics", 3, "steps")  # delete, create, commit
    admin = AdminClient({**kafka_config(bootstrap), "log_level": 0})
    existing = set(admin.list_topics(timeout=10).topics)
    present = [t for t in doomed if t in existing]
    if present:
        for name, future in admin.delete_topics(present, operation_timeout=30).items():
            try:
                future.result(timeout=30)
            except KafkaException as error:
                raise BrokerError(f"cannot delete {name}: {error}") from None
    progress.update(1)
    deadline = time.monotonic() + 30
    while set(present) & set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise BrokerError("deleted topics still listed after 30 s; run replay again")
        time.sleep(0.2)
    specs = [s for s in topic_specs(settings, []) if s.name in doomed]
    ensure_topics(bootstrap, specs)
    progress.update(2)
    _commit(bootstrap, group, [TopicPartition(EVENTS, p, o) for p, o in offsets.items()])
    # Kafka drops a deleted topic's committed offsets; a broker that kept them would skip records
    # of the new, empty topics, so whatever is left is pointed at their start.
    consumer = _consumer(bootstrap, group)
    try:
        internal = [
            TopicPartition(t, p)
            for s in specs
            for t, p in ((s.name, p) for p in range(s.partitions))
        ]
        left = [tp for tp in consumer.committed(internal, timeout=10) if tp.offset > 0]
    finally:
        consumer.close()
    _commit(bootstrap, group, [TopicPartition(tp.topic, tp.partition, 0) for tp in left])
    progress.update(3)
    return RebuildReport(
        start=offsets,
        recreated=sorted(doomed),
        reset=sorted({tp.topic for tp in left}),
    )


# ---- dead-letter re-drive ----------------------------------------------------------------------


@dataclass
class RedriveReport:
    read: int = 0
    redriven: int = 0
    left: list[dict[str, Any]] = field(default_factory=list)
    from_offsets: dict[int, int] = field(default_factory=dict)
    to_offsets: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "redriven": self.redriven,
            "left": len(self.left),
            "left_records": self.left,
            "from_offsets": self.from_offsets,
            "to_offsets": self.to_offsets,
        }


def revalidate(letter: DeadLetter, codec: Any, catalog: Catalog | None) -> tuple[Event, bool]:
    """The letter's event if its original bytes now pass `publish`'s validation (and the catalog).

    Returns (event, is_json); InvalidEvent with the reason otherwise.
    """
    topic = letter.topic or EVENTS
    if topic != EVENTS and topic not in INTERNAL_TOPICS:
        raise InvalidEvent(f"came from {topic}: only events are re-driven")
    original = letter.original
    is_json = original.lstrip()[:1] == b"{"
    if is_json:
        event = parse_event_json(original)
    else:
        try:
            decoded = codec.decode(original, EVENTS)
        except EncodingError as error:
            raise InvalidEvent(str(error)) from None
        from streams.core.models import EVENT_TYPES

        if type(decoded) not in EVENT_TYPES.values():
            raise InvalidEvent(f"a {type(decoded).__name__} record is not an event")
        event = decoded
    if catalog is not None:
        reason = check_event(event, catalog)
        if reason is not None:
            raise InvalidEvent(reason)
    return event, is_json


def redrive(
    settings: Settings,
    bootstrap: str,
    start: Start | None,
    catalog: Catalog | None,
    *,
    dry_run: bool = False,
    progress: StageProgress | None = None,
) -> RedriveReport:
    """Re-publish dead letters that now validate to inventory.events; commit the DLQ position.

    Internal command topics are re-entered through the event log, where routing happens again.
    `progress` is told the dead letters read of those there were.
    """
    progress = progress or StageProgress(enabled=False)
    from streams.runtime.producer import Outgoing, SourceProducer

    group = f"{settings.app_id}-dlq-redrive"
    partitions = _partitions(bootstrap, DLQ)
    ends = true_end_offsets(bootstrap, DLQ, partitions)
    if start is not None:
        begin = start_offsets(bootstrap, DLQ, start)
    else:
        consumer = _consumer(bootstrap, group)
        try:
            committed = consumer.committed([TopicPartition(DLQ, p) for p in partitions], timeout=10)
        finally:
            consumer.close()
        fallback = start_offsets(bootstrap, DLQ, Start(beginning=True))
        begin = {
            tp.partition: tp.offset if tp.offset >= 0 else fallback[tp.partition]
            for tp in committed
        }
    report = RedriveReport(from_offsets=begin, to_offsets=ends)
    producer = SourceProducer(bootstrap, settings=settings)
    codec = producer.codec
    todo = {p for p in partitions if begin[p] < ends[p]}
    progress.stage(f"re-driving {DLQ}", sum(max(0, ends[p] - begin[p]) for p in partitions))
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(DLQ, p, begin[p]) for p in todo])
        deadline = time.monotonic() + 300
        while todo:
            if time.monotonic() > deadline:
                raise BrokerError(f"could not read {DLQ} within 300 s")
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            if partition not in todo or offset >= ends[partition]:
                continue
            if offset + 1 >= ends[partition]:
                todo.discard(partition)
            report.read += 1
            progress.update(report.read)
            where = {"partition": partition, "offset": offset}
            try:
                letter = codec.decode(message.value() or b"", DLQ)
            except (EncodingError, InvalidEvent) as error:
                report.left.append({**where, "reason": f"not a dead letter: {error}"})
                continue
            if not isinstance(letter, DeadLetter):
                report.left.append({**where, "reason": "not a dead letter record"})
                continue
            try:
                event, is_json = revalidate(letter, codec, catalog)
            except InvalidEvent as error:
                report.left.append(
                    {
                        **where,
                        "reason": error.reason,
                        "source": letter.source,
                        "original_reason": letter.reason,
                    }
                )
                continue
            report.redriven += 1
            if dry_run:
                continue
            if is_json:
                producer.send_event(event)  # the log carries Avro: encoded as publish does
            else:
                producer.send(Outgoing(EVENTS, event_key(event).encode(), letter.original, False))
    finally:
        consumer.close()
    counts = producer.close()
    if counts.failed:
        raise BrokerError(f"{counts.failed} re-driven records were not acknowledged")
    if not dry_run:
        _commit(bootstrap, group, [TopicPartition(DLQ, p, o) for p, o in ends.items()])
    return report
