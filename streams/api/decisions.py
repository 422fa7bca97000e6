"""What the API knows about reservations: the stream's decisions, and the requests waiting on them.

Guarantee: a decision made after `DecisionFeed.start()` returns is never missed; the start-up read
goes back LOOKBACK_SECONDS, so every hold still open is known once `Decisions.caught_up` is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.api.feed import FeedThread, arrived, groupless_consumer
from streams.core.models import MAX_TTL_SECONDS
from streams.core.reservations import HELD, PENDING
from streams.runtime.offsets import true_end_offsets
from streams.runtime.topics import RESERVATION_DECISIONS

log = logging.getLogger(__name__)

Decision = dict[str, Any]  # ReservationState.decision(): reservation_id, channel, status, ...
# Decisions are read from this far back at start-up: every hold still open was decided within it.
LOOKBACK_SECONDS = MAX_TTL_SECONDS + 600


class Decisions:
    """Decisions as the stream publishes them: waiters by reservation id, open holds, recent ends.

    Lives on the event loop; the feed thread hands batches over with call_soon_threadsafe. Open
    holds are kept until their expiry (plus a grace period), so a DELETE can check the owner;
    closed reservations are remembered up to `remember` of them, for idempotent answers.
    """

    def __init__(self, remember: int = 200_000, grace_seconds: float = 300.0) -> None:
        self.remember = remember
        self.grace_seconds = grace_seconds
        self.caught_up = False  # the start-up read of recent decisions has reached the end
        self._waiters: dict[str, list[tuple[Callable[[Decision], bool], asyncio.Future[Decision]]]]
        self._waiters = {}
        self._held: dict[str, tuple[float, Decision]] = {}  # id -> (expires at, epoch s; decision)
        self._closed: OrderedDict[str, Decision] = OrderedDict()
        self._offers = 0

    def wait(
        self, reservation_id: str, accept: Callable[[Decision], bool] = lambda _d: True
    ) -> asyncio.Future[Decision]:
        """A future for the next decision on `reservation_id` that `accept` takes."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(reservation_id, []).append((accept, future))
        return future

    def forget(self, reservation_id: str, future: asyncio.Future[Decision]) -> None:
        waiting = self._waiters.get(reservation_id)
        if waiting is None:
            return
        waiting[:] = [(a, f) for a, f in waiting if f is not future]
        if not waiting:
            del self._waiters[reservation_id]

    def known(self, reservation_id: str) -> Decision | None:
        """The latest decision seen for `reservation_id`, if it is open or recently closed."""
        held = self._held.get(reservation_id)
        return held[1] if held is not None else self._closed.get(reservation_id)

    def offer_many(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            self.offer(decision)

    def offer(self, decision: Decision) -> None:
        rid = decision["reservation_id"]
        if decision["status"] == HELD:
            self._held[rid] = (_epoch(decision.get("expires_at")), decision)
            self._closed.pop(rid, None)
        elif decision["status"] != PENDING:
            self._held.pop(rid, None)
            self._closed[rid] = decision
            self._closed.move_to_end(rid)
            while len(self._closed) > self.remember:
                self._closed.popitem(last=False)
        waiting = self._waiters.get(rid)
        if waiting:
            keep = []
            for accept, future in waiting:
                if future.done():
                    continue
                if accept(decision):
                    future.set_result(decision)
                else:
                    keep.append((accept, future))
            if keep:
                waiting[:] = keep
            else:
                del self._waiters[rid]
        self._offers += 1
        if self._offers % 10_000 == 0:
            self._drop_expired()

    def _drop_expired(self) -> None:
        horizon = time.time() - self.grace_seconds
        for rid in [rid for rid, (expires, _) in self._held.items() if expires < horizon]:
            del self._held[rid]


def _epoch(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


class DecisionFeed(FeedThread):
    """Reads `inventory.reservation-decisions` on every partition into a Decisions view.

    Start positions are fixed in start(), before any request is produced, so no decision made
    after start() can be missed; they go back LOOKBACK_SECONDS so every open hold is known.
    """

    def __init__(
        self,
        bootstrap: str,
        partitions: int,
        decisions: Decisions,
        loop: asyncio.AbstractEventLoop,
        *,
        lookback_seconds: float = LOOKBACK_SECONDS,
        fetch_wait_ms: int = 10,
    ) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.decisions = decisions
        self.loop = loop
        self.lookback_seconds = lookback_seconds
        self.fetch_wait_ms = fetch_wait_ms
        super().__init__()

    def start(self) -> None:
        """Fix the start offsets and begin reading (blocking: call it from a thread)."""
        parts = list(range(self.partitions))
        ends = true_end_offsets(self.bootstrap, RESERVATION_DECISIONS, parts)
        consumer = groupless_consumer(self.bootstrap, self.fetch_wait_ms)
        since = int((time.time() - self.lookback_seconds) * 1000)
        try:
            found = consumer.offsets_for_times(
                [TopicPartition(RESERVATION_DECISIONS, p, since) for p in parts], timeout=10
            )
            starts = {
                tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found
            }
        except KafkaException as error:
            log.warning("reservation API: offsets by time unavailable (%s); reading all", error)
            starts = dict.fromkeys(parts, 0)
        consumer.assign([TopicPartition(RESERVATION_DECISIONS, p, starts[p]) for p in parts])
        behind = {p for p in parts if starts[p] < ends[p]}
        if not behind:
            self.loop.call_soon_threadsafe(setattr, self.decisions, "caught_up", True)
        self._launch(self._run, (consumer, ends, behind), "api-decisions")

    def _run(self, consumer: Consumer, ends: dict[int, int], behind: set[int]) -> None:
        try:
            while not self._halt.is_set():
                batch: list[Decision] = []
                for message in arrived(consumer, 0.05):
                    if message.error() is not None:
                        continue
                    value, partition, offset = (
                        message.value(),
                        message.partition(),
                        message.offset(),
                    )
                    if value is None or partition is None or offset is None:
                        continue
                    try:
                        batch.append(json.loads(value))
                    except (ValueError, TypeError):
                        log.warning("reservation API: undecodable decision at %s", offset)
                        continue
                    if partition in behind and offset + 1 >= ends[partition]:
                        behind.discard(partition)
                        if not behind:
                            self.loop.call_soon_threadsafe(
                                setattr, self.decisions, "caught_up", True
                            )
                if batch:
                    self.loop.call_soon_threadsafe(self.decisions.offer_many, batch)
        except Exception as error:  # reported by /health; never a silent stop
            self.error = f"decision feed stopped: {error}"
            log.exception("reservation API: decision feed stopped")
        finally:
            consumer.close()
