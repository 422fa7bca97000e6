"""A stage's records as they come and go: in their partitions' order, none passed over; the
commands of a batch, one record per partition; and what a record's headers and timestamp say."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.commands import COMMITTED_FLAG, Item, pack
from streams.runtime.outputs import Outputs
from streams.runtime.topics import COMMANDS, COMMITTED, partition_for

log = logging.getLogger(__name__)

# the headers of an order the SKU stage has committed in place, as the producer takes them
COMMITTED_HEADERS: list[tuple[str, str | bytes | None]] = [COMMITTED]


class InSequence:
    """A stage's records in their partitions' order, none passed over.

    The consumer has been seen to pass over a record right after a worker started, and the group
    to commit past it: an order's cancel never applied, about one run in eight of
    tests/integration/test_hot_sku.py on a loaded machine. (Faust's stream acknowledges a record
    it skips while its flow control is suspended or its generation is old, and its consumer
    counts a hole in the offsets it receives as done; which path it was is not pinned down.)
    A record past the one due in its partition is disowned (neither handled nor acknowledged, so
    no commit of this worker passes the hole) and the partition is to be read again from the
    record due (`rewinds`, after the batch); a record handled twice is recognised by its ids, as
    after any redelivery.
    """

    def __init__(self, disown: Callable[[Any], None]) -> None:
        self._disown = disown
        self._due: dict[tuple[str, int], int] = {}  # (topic, partition) -> the offset due next
        self._rewind: dict[tuple[str, int], int] = {}

    def take(self, messages: list[Any]) -> list[Any]:
        kept = []
        for message in messages:
            tp = (message.topic, message.partition)
            due = self._due.get(tp)
            if due is not None and message.offset > due:
                self._disown(message)
                if tp not in self._rewind:
                    log.warning(
                        "record %d of %s[%d] was passed over by the consumer (%d came instead): "
                        "read again from it",
                        due,
                        message.topic,
                        message.partition,
                        message.offset,
                    )
                    self._rewind[tp] = due
                continue
            self._due[tp] = message.offset + 1
            kept.append(message)
        return kept

    def rewinds(self) -> list[tuple[tuple[str, int], int]]:
        """The partitions to read again and from where, once each; forgotten as they are given."""
        out, self._rewind = list(self._rewind.items()), {}
        return out

    def forget(self) -> None:
        """After a rebalance: the stages resume from the committed offsets, whatever they are."""
        self._due.clear()
        self._rewind.clear()


class CommandBatch:
    """The commands one batch of a stage sends to the stages: one record per partition.

    Every Kafka record costs the framework about as much of a worker's CPU as the domain work of
    an event (an empty Faust agent: ~68 µs a record on the benchmark machine), and an event of the
    realistic mix used to become 0.55 internal records (forwards, per-SKU commands, hold answers,
    decisions). So a batch's commands are gathered and sent at its end, packed per partition into
    envelopes (streams.commands): the receiving stage takes them apart and handles each as the
    record it would have been. Order is kept per partition, and so per key. Sent before the
    batch's events are acknowledged, so before any commit that covers them; redelivered, each
    command is idempotent on its own.
    """

    LIMIT = 256 * 1024  # bytes per envelope, well under the producer's 1 MB

    def __init__(self, outputs: Outputs, partitions: int) -> None:
        self.outputs = outputs
        self.partitions = partitions
        self.pending: dict[int, list[Item]] = {}
        # per partition, the earliest input timestamp (epoch s) behind its commands: the records
        # carry it, so event-to-availability latency counts from the input, not from this hop
        self.origin: dict[int, float] = {}

    def add(self, key: bytes, value: bytes, flags: int = 0, origin: float | None = None) -> None:
        partition = partition_for(key, self.partitions)
        self.pending.setdefault(partition, []).append(Item(key, value, flags))
        if origin and origin < self.origin.get(partition, float("inf")):
            self.origin[partition] = origin

    def send(self) -> None:
        pending, self.pending = self.pending, {}
        origins, self.origin = self.origin, {}
        for partition, items in pending.items():
            at = origins.get(partition)
            timestamp = int(at * 1000) if at else 0  # 0: the producer's clock
            if len(items) == 1:  # alone: a plain record, as readable as before
                key, value, flags = items[0]
                headers = COMMITTED_HEADERS if flags & COMMITTED_FLAG else None
                self.outputs.send(COMMANDS, key, value, partition, headers, timestamp)
                continue
            for envelope in pack(items, self.LIMIT):
                self.outputs.send(COMMANDS, None, envelope, partition, timestamp=timestamp)


@dataclass(frozen=True, slots=True)
class Inner:
    """An item of an envelope, seen as the record it stands for (for routing and dead letters)."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: Any
    timestamp: float | None = None  # the record's Kafka timestamp (epoch seconds)


def message_time(message: Any) -> float:
    """A record's Kafka timestamp in epoch seconds (now when it has none)."""
    at = getattr(message, "timestamp", None)
    return float(at) if at else time.time()


def is_committed(message: Any) -> bool:
    return has_header(message, COMMITTED)


def has_header(message: Any, header: tuple[str, Any]) -> bool:
    headers = message.headers or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return any(name == header[0] and value == header[1] for name, value in pairs)
