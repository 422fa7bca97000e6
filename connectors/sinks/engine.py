"""The sink engine: only the newest version of each channel_sku is sent, never a version older than
one the channel acknowledged, one call at a time; an offset becomes committable once the channel
acknowledged its record (or a newer record of the same key), so delivery is at-least-once and,
every update being an absolute quantity whose version only moves forward, idempotent.

Pacing: while records keep arriving, a key goes at most once per coalescing window (`linger`) and a
batch that is not full at most once per window, so a burst costs about one call per window per
full batch. Once the consumer has read all the broker had and no record came for `quiet` seconds
(a quarter of the window by default) the burst is over and nothing is held for a timer: the
newest value of every waiting key goes as soon as the channel's rate limit allows. While waiting
for the limit, keys keep coalescing.

Settling (a sink's `settle`, off at 0; on for webhooks): while records keep coming, a
value that is still changing waits until its key has been quiet for `settle` seconds, but never
more than `max_hold` seconds after the channel went out of date, so a rate-limited channel's calls
carry values that stay. A sell-out (the channel shows stock, the value says none) skips the hold
and the window and goes before any other key; a value back from zero skips the hold. Otherwise the
key that has waited longest goes first.

No Kafka and no HTTP here: the runner feeds records in with offer() and commits what
committable() returns; a Sink does the talking. Tests drive it with a fake sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from connectors.sinks.base import BulkSink, ChannelUnavailable, Outcome, Sink
from connectors.sinks.limits import Backoff, Clock
from connectors.sinks.metrics import SinkMetrics
from streams.core.models import Availability

log = logging.getLogger(__name__)

# (record, original bytes, partition, offset, reason) -> written to the dead-letter topic
DeadLetterHook = Callable[
    [Availability, bytes | None, int | None, int | None, str], Awaitable[None]
]

MAX_ITEM_RETRIES = 5  # per-record retries (e.g. compare-and-set re-reads) before giving up
SETTLE_TICK = 0.005  # shortest sleep for a held key

# How a waiting value changes what the channel shows (settling only).
SETTLING, RESTOCK, SELL_OUT = 0, 1, 2


@dataclass(slots=True)
class _Slot:
    record: Availability
    partition: int | None
    offset: int | None
    raw: bytes | None
    since: float  # when the channel first became out of date for this key (engine clock)
    changed: float  # when the newest record of this key was written (engine clock)
    attempts: int = 0
    quiet: int = 0  # settling: its entry in the heap of quiet keys (0: still changing)


class OffsetTracker:
    """Per partition, the lowest offset not yet done: everything below it may be committed."""

    def __init__(self) -> None:
        self._open: dict[int, deque[int]] = {}
        self._done: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}

    def track(self, partition: int, offset: int) -> None:
        """Offsets are tracked in consumption order, i.e. increasing within a partition."""
        if partition not in self._open:
            self._open[partition], self._done[partition] = deque(), set()
            self._committed.setdefault(partition, offset)  # nothing to commit below the first read
        self._open[partition].append(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def done(self, partition: int | None, offset: int | None) -> None:
        if partition is None or offset is None or partition not in self._open:
            return
        self._done[partition].add(offset)

    def position(self, partition: int) -> int:
        pending, done = self._open[partition], self._done[partition]
        while pending and pending[0] in done:
            done.discard(pending.popleft())
        return pending[0] if pending else self._next[partition]

    def committable(self) -> dict[int, int]:
        """Partitions whose commit position moved since the last mark_committed()."""
        out = {}
        for partition in self._open:
            position = self.position(partition)
            if position > self._committed.get(partition, -1):
                out[partition] = position
        return out

    def mark_committed(self, positions: dict[int, int]) -> None:
        for partition, position in positions.items():
            self._committed[partition] = max(self._committed.get(partition, -1), position)

    def forget(self, partitions: Iterable[int]) -> None:
        """After a rebalance took these partitions away: their new owner starts at the commit."""
        for partition in partitions:
            for table in (self._open, self._done, self._next, self._committed):
                table.pop(partition, None)


class SinkEngine:
    """Coalesces, orders and retries the availability updates of one channel."""

    def __init__(
        self,
        sink: Sink,
        *,
        metrics: SinkMetrics | None = None,
        dead_letter: DeadLetterHook | None = None,
        backoff: Backoff | None = None,
        clock: Clock = time.monotonic,
        on_ack: Callable[[Availability], None] | None = None,
    ) -> None:
        self.sink = sink
        self._on_ack = on_ack  # told of every record the channel acknowledged (status views)
        self.channel_id = sink.channel_id
        self._metrics = metrics or SinkMetrics(CollectorRegistry())
        m, ch = self._metrics, self.channel_id
        # Labelled once: offer() runs for every record read, labels() costs a lock and a lookup.
        self._received = m.records_received.labels(ch)
        self._skipped = m.records_skipped.labels(ch)
        self._coalesced = m.records_coalesced.labels(ch)
        self._pending = m.pending.labels(ch)
        m.watch(ch, self.staleness)
        self._dead_letter = dead_letter
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._buffer: dict[str, _Slot] = {}  # waiting, oldest first
        self._in_flight: dict[str, _Slot] = {}
        self._acked: dict[str, int] = {}  # channel_sku -> highest version the channel acknowledged
        self.offsets = OffsetTracker()
        self._failures = 0
        self._paused_until = 0.0
        self._wake = asyncio.Event()
        self._bulk: asyncio.Task[None] | None = None
        # While records keep coming, a key sent less than `linger` seconds ago waits until then:
        # a hot SKU costs at most one send per window, while a SKU that was quiet goes out at once.
        self._linger = float(sink.linger)
        # No record for `quiet` seconds: the burst is over, holding keys back saves nothing more.
        self._quiet = self._linger / 4 if sink.quiet is None else float(sink.quiet)
        # A bulk job (a feed) waits for quiet input while the backlog is younger than this, so a
        # scarce bulk submission is not spent on values that are still changing.
        self._bulk_hold = float(sink.bulk_hold)
        # Hold a value still changing until its key was quiet for `settle` seconds, at most
        # `max_hold` after the channel went out of date (0: off; see the module docstring).
        self._settle = float(sink.settle)
        # a key goes once per window anyway: a shorter cap would change nothing
        self._max_hold = max(self._linger, float(sink.max_hold))
        self._shown: dict[str, int] = {}  # channel_sku -> `available` acknowledged
        # Waiting keys by kind: sell-outs, values back from 0, and the rest, either still
        # changing (by last change, so the quiet ones lead) or found quiet (a heap by `since`).
        self._sellouts: set[str] = set()
        self._restocks: set[str] = set()
        self._changing: dict[str, _Slot] = {}
        self._quiet_keys: list[tuple[float, int, str, _Slot]] = []
        self._quiet_seq = itertools.count(1)
        self._newest_record = -float("inf")  # the latest record time offered
        self._last_input = -float("inf")  # the last offer, or -inf after end_of_input()
        self._last_offer = -float("inf")
        # When the consumer last read everything the broker had (None: nobody tells us, e.g. a
        # resync); quiet input needs that, so a stall of our own is not taken for a burst's end.
        self._caught_up_at: float | None = None
        self._sent_at: dict[str, float] = {}
        self._last_partial = -float("inf")  # a batch that is not full goes at most once per window
        # Whether a new sendable key wakes the sender (not while it waits out a round's window).
        self._wake_on_arrival = True
        self.flushes = 0  # calls of sink.flush() / flush_bulk(), for tests and the benchmark
        self.acked = 0
        self.dead_lettered = 0

    # ---- input ----

    def offer(
        self,
        record: Availability,
        *,
        partition: int | None = None,
        offset: int | None = None,
        raw: bytes | None = None,
        received_at: float | None = None,
    ) -> None:
        """Take one record read from availability.<channel>, in topic order per partition."""
        self._received.inc()
        if partition is not None and offset is not None:
            self.offsets.track(partition, offset)
        key, version = record.channel_sku, record.version
        now = self._clock()
        self._last_input = self._last_offer = now
        written = received_at or now
        if written > self._newest_record:
            self._newest_record = written
        if version <= self._acked.get(key, -1):
            self._skipped.inc()  # a duplicate or a late older version
            self.offsets.done(partition, offset)
            return
        slot = self._buffer.get(key)
        if slot is not None:
            if version > slot.record.version:
                # Same key, same partition, higher offset: the older offset is covered by this one.
                self.offsets.done(slot.partition, slot.offset)
                slot.record, slot.partition, slot.offset, slot.raw = record, partition, offset, raw
                slot.changed = written
                self._coalesced.inc()
                if self._settle > 0:
                    self._settling_arrival(key, slot, now)
            else:
                self._skipped.inc()
                self.offsets.done(partition, offset)
            return
        flying = self._in_flight.get(key)
        if flying is not None and version <= flying.record.version:
            self._skipped.inc()
            self.offsets.done(partition, offset)
            return
        slot = self._buffer[key] = _Slot(record, partition, offset, raw, written, written)
        self._gauge()
        if self._settle > 0:
            self._settling_arrival(key, slot, now)
            if len(self._buffer) == 1:
                self._wake.set()
            return
        sendable = flying is None and self._sent_at.get(key, -float("inf")) <= now - self._linger
        if (sendable and self._wake_on_arrival) or len(self._buffer) == 1:
            self._wake.set()

    def _settling_arrival(self, key: str, slot: _Slot, now: float) -> None:
        """A new value for a waiting key: a sell-out wakes the sender whatever it waits for, a
        value back from zero wakes it outside the key's window, anything else waits its timer."""
        slot.quiet = 0
        self._changing.pop(key, None)
        self._changing[key] = slot  # the most recently changed last
        change = self._classify(key, slot)
        if change == SETTLING or key in self._in_flight:
            return
        if change == SELL_OUT or (
            self._wake_on_arrival and self._sent_at.get(key, -float("inf")) <= now - self._linger
        ):
            self._wake.set()

    def _classify(self, key: str, slot: _Slot) -> int:
        """What the waiting value does to what the channel shows; keeps the kind sets in step.

        A sell-out takes `available` to 0 where the channel shows stock or where we do not know what
        it shows (the value that stops overselling); a restock brings back what it shows as 0.
        """
        shown = self._shown.get(key)
        change = SETTLING
        if slot.record.available <= 0:
            if shown is None or shown > 0:
                change = SELL_OUT
        elif shown == 0:
            change = RESTOCK
        if change == SELL_OUT:
            self._sellouts.add(key)
        else:
            self._sellouts.discard(key)
        if change == RESTOCK:
            self._restocks.add(key)
        else:
            self._restocks.discard(key)
        return change

    def end_of_input(self) -> None:
        """No more records are coming (a resync offered the whole topic): nothing waits for a
        coalescing window or for quiet input any more, only for the channel's limits."""
        self._last_input = -float("inf")
        self._wake.set()

    def caught_up(self) -> None:
        """The consumer has offered everything the broker had (a poll came back short)."""
        self._caught_up_at = self._clock()
        if self._buffer:
            self._wake.set()

    def _until_quiet(self) -> float:
        """Seconds until the input counts as quiet; <= 0 when it does."""
        wait = self._last_input + self._quiet - self._clock()
        if self._caught_up_at is not None and self._caught_up_at < self._last_input:
            return max(wait, self._quiet)  # records may still be waiting: caught_up() wakes us
        return wait

    def _horizon(self, now: float) -> float:
        """Until when we know every change: now if the consumer caught up since the last record,
        else the newest record's time (later ones may still be on their way)."""
        if self._caught_up_at is not None and self._caught_up_at >= self._last_input:
            return now
        return min(now, self._newest_record)

    def skip(self, partition: int, offset: int) -> None:
        """A record handled outside the engine (e.g. undecodable, already dead-lettered)."""
        self.offsets.track(partition, offset)
        self.offsets.done(partition, offset)

    # ---- state ----

    @property
    def pending(self) -> int:
        return len(self._buffer) + len(self._in_flight)

    def staleness(self) -> float:
        """Seconds since the channel first went out of date for its oldest waiting or in-flight
        key; 0 when it has acknowledged everything. Called from the metrics server's thread."""
        for _ in range(3):
            try:  # a copy made while the sender changes the dicts can fail: take another
                since = [s.since for s in (*self._buffer.values(), *self._in_flight.values())]
                break
            except RuntimeError:
                continue
        else:
            return 0.0
        return max(0.0, self._clock() - min(since)) if since else 0.0

    @property
    def idle(self) -> bool:
        return not self._buffer and not self._in_flight and self._bulk is None

    @property
    def last_offer_at(self) -> float:
        """When (engine clock) the last record was offered; -inf before the first."""
        return self._last_offer

    def committable(self) -> dict[int, int]:
        return self.offsets.committable()

    # ---- the send loop ----

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; a call already made is always seen through to its outcome."""
        while not stop.is_set():
            if not await self.step(stop):
                self._wake.clear()
                await _first(stop.wait(), self._wake.wait())
        if self._bulk is not None:
            await self._bulk

    async def run_until_idle(self, stop: asyncio.Event | None = None) -> None:
        """Send until nothing is waiting or in flight (used by resync and tests)."""
        stop = stop or asyncio.Event()
        while not self.idle and not stop.is_set():
            if not await self.step(stop):
                self._wake.clear()
                if self._bulk is not None:
                    await _first(stop.wait(), self._wake.wait(), asyncio.shield(self._bulk))
                elif self._buffer:
                    await _first(stop.wait(), self._wake.wait())
        if self._bulk is not None:
            await self._bulk

    async def step(self, stop: asyncio.Event | None = None) -> bool:
        """Make at most one call; False when there was nothing to send."""
        stop = stop or asyncio.Event()
        pause = self._paused_until - self._clock()
        if pause > 0:
            await _first(stop.wait(), asyncio.sleep(pause))
            return True
        if not self._buffer:
            return False
        until_quiet = self._until_quiet()
        settled = until_quiet <= 0
        await self._maybe_bulk(settled)
        if not self._buffer:
            return False
        due, not_before = self._due(settled)
        if due == 0:
            # Everything waiting is in flight or inside its window: a sendable key, the window's
            # end or quiet input, whichever comes first.
            await self._sleep(stop, True, not_before, until_quiet)
            return True
        limit = self.sink.max_batch
        partial_wait = self._last_partial + self._linger - self._clock()
        if partial_wait > 0 and not settled and not self._sellout_waiting():
            # Records keep coming and this window's round ended with a partial call: the next
            # round starts when the window ends (or the input goes quiet), even if a full batch
            # of new keys waits. Sending each batch as it fills puts keys on scattered windows,
            # and a burst then costs about a fifth more calls.
            await self._sleep(stop, False, partial_wait, until_quiet)
            return True
        waited = self._clock()
        if not await _first(stop.wait(), self.sink.ready()):
            return True  # stopped while waiting for the rate limit: nothing was sent
        self._metrics.throttle_wait.labels(self.channel_id).inc(self._clock() - waited)
        # Keys kept coalescing while we waited; the input may have gone quiet meanwhile.
        batch = self._take(limit, settled=self._until_quiet() <= 0)
        if not batch:
            return True  # new input ended the quiet while we waited: decide again
        await self._send(batch)
        return True

    async def _sleep(self, stop: asyncio.Event, on_arrival: bool, *timers: float) -> None:
        """Until `stop`, a wake-up (a new sendable key if `on_arrival`), or the first timer > 0."""
        self._wake.clear()
        self._wake_on_arrival = on_arrival
        waits = [t for t in timers if t > 0]
        try:
            if waits:
                await _first(stop.wait(), self._wake.wait(), asyncio.sleep(min(waits)))
            else:
                await _first(stop.wait(), self._wake.wait())
        finally:
            self._wake_on_arrival = True

    async def _maybe_bulk(self, settled: bool) -> None:
        sink = self.sink
        if self._bulk is not None or not isinstance(sink, BulkSink):
            return
        if len(self._buffer) < sink.bulk_threshold:
            return
        if not settled and self._bulk_hold > 0:
            oldest = min(slot.since for slot in self._buffer.values())
            if self._clock() - oldest < self._bulk_hold:
                return  # values still changing and none waited long: not worth a bulk job yet
        if not await sink.bulk_ready():
            return
        batch = self._take(sink.max_bulk, bulk=True, settled=settled)
        self._bulk = asyncio.create_task(self._send_bulk(sink, batch))

    def _due(self, settled: bool) -> tuple[int, float]:
        """(keys that may be sent now, up to a full batch; seconds until the next one may)."""
        limit = self.sink.max_batch
        flying = self._in_flight
        if self._settle > 0:
            batch, wait = self._settling_due(limit, settled)
            return len(batch), wait
        if (self._linger <= 0 or settled) and not flying:
            return min(limit, len(self._buffer)), 0.0
        cutoff = float("inf") if settled else self._clock() - self._linger
        due, earliest = 0, float("inf")
        for key in self._buffer:
            if key in flying:  # one call per key at a time: it waits for the outcome (a wake-up)
                continue
            sent = self._sent_at.get(key, cutoff)
            if sent <= cutoff:
                due += 1
                if due >= limit:
                    break
            else:
                earliest = min(earliest, sent)
        return due, (0.0 if due else min(60.0, earliest - cutoff))

    def _sellout_waiting(self) -> bool:
        return any(key not in self._in_flight for key in self._sellouts)

    def _mark_quiet(self, key: str, slot: _Slot) -> None:
        self._changing.pop(key, None)
        slot.quiet = next(self._quiet_seq)
        heap = self._quiet_keys
        if len(heap) > 2 * len(self._buffer) + 64:  # mostly entries of keys sent since: drop them
            buffer = self._buffer
            heap[:] = [e for e in heap if buffer.get(e[2]) is e[3] and e[3].quiet == e[1]]
            heapq.heapify(heap)
        heapq.heappush(heap, (slot.since, slot.quiet, key, slot))

    def _settling_due(self, limit: int, settled: bool) -> tuple[list[_Slot], float]:
        """Settling: up to `limit` waiting values that may go now, best first, and the seconds
        until the next one may. Sell-outs first, oldest first; then, oldest first, values back from
        0 and values quiet for `settle` or held `max_hold`, outside their key's window. Each key is
        looked at O(log n) times, not once per call: a sale can keep thousands waiting."""
        buffer, flying, sent_at = self._buffer, self._in_flight, self._sent_at
        batch = sorted(
            (buffer[key] for key in self._sellouts if key not in flying), key=lambda s: s.since
        )[:limit]
        if len(batch) >= limit:
            return batch, 0.0
        chosen = {slot.record.channel_sku for slot in batch}
        if settled:  # the input went quiet: nothing holds, the order is the waiting order
            for key, slot in buffer.items():
                if key not in flying and key not in chosen:
                    batch.append(slot)
                    if len(batch) >= limit:
                        break
            return batch, 0.0
        now = self._clock()
        horizon = self._horizon(now)
        window_start = now - self._linger
        wait = float("inf")  # until the next value may go (as of now)
        # still changing -> quiet: the ones changed longest ago lead `_changing`
        quiet_since = horizon - self._settle
        became_quiet = []
        for key, slot in self._changing.items():
            if slot.changed > quiet_since:
                wait = slot.changed - quiet_since  # the horizon moves with the clock at best
                break
            became_quiet.append((key, slot))
        for key, slot in became_quiet:
            self._mark_quiet(key, slot)
        # held `max_hold`: the waiting order is `since` order, so they lead the buffer
        held_since = now - self._max_hold
        capped = iter(buffer.items())

        def next_capped() -> _Slot | None:
            nonlocal wait
            for key, slot in capped:
                if slot.since > held_since:
                    wait = min(wait, slot.since - held_since)
                    return None
                if key in flying or key in chosen:
                    continue
                sent = sent_at.get(key)
                if sent is not None and sent > window_start:
                    wait = min(wait, sent - window_start)
                    continue
                return slot
            return None

        # found quiet: a heap by `since`, with stale entries (sent, changed again) dropped
        quiet, parked = self._quiet_keys, []

        def next_quiet() -> _Slot | None:
            nonlocal wait
            while quiet:
                _, seq, key, slot = heapq.heappop(quiet)
                if buffer.get(key) is not slot or slot.quiet != seq:
                    continue
                parked.append((slot.since, seq, key, slot))
                sent = sent_at.get(key)
                if key in flying or key in chosen:
                    continue
                if sent is not None and sent > window_start:
                    wait = min(wait, sent - window_start)
                    continue
                return slot
            return None

        restocks = []
        for key in self._restocks:
            sent = sent_at.get(key)
            if key in flying or key in chosen:
                continue
            if sent is not None and sent > window_start:
                wait = min(wait, sent - window_start)
            else:
                restocks.append(buffer[key])
        restocks.sort(key=lambda s: s.since, reverse=True)

        def next_restock() -> _Slot | None:
            return restocks.pop() if restocks else None

        # merge the three sources, oldest first: (since, source, slot) of each one's best
        sources = (next_capped, next_quiet, next_restock)
        heads: list[_Slot | None] = [pick() for pick in sources]
        while len(batch) < limit:
            live = [(head.since, i, head) for i, head in enumerate(heads) if head is not None]
            if not live:
                break
            _, best, head = min(live, key=lambda entry: entry[:2])
            if head.record.channel_sku not in chosen:
                chosen.add(head.record.channel_sku)
                batch.append(head)
            heads[best] = sources[best]()
        for entry in parked:
            heapq.heappush(quiet, entry)
        return batch, (0.0 if batch else min(60.0, max(SETTLE_TICK, wait)))

    def _take(self, limit: int, bulk: bool = False, settled: bool = False) -> list[_Slot]:
        now = self._clock()
        if self._settle > 0 and not bulk:
            batch, _ = self._settling_due(limit, settled)
        else:
            cutoff = float("inf") if settled else now - self._linger
            slots: Iterable[_Slot] = (
                slot
                for key, slot in self._buffer.items()
                if key not in self._in_flight and self._sent_at.get(key, cutoff) <= cutoff
            )
            batch = list(itertools.islice(slots, limit))
        if not bulk and 0 < len(batch) < limit:
            self._last_partial = now
        for slot in batch:
            key = slot.record.channel_sku
            del self._buffer[key]
            if self._settle > 0:
                self._sellouts.discard(key)
                self._restocks.discard(key)
                self._changing.pop(key, None)
            self._in_flight[key] = slot
            self._sent_at[key] = now
        return batch

    async def _send(self, batch: list[_Slot]) -> None:
        for slot in batch:
            self.sink.add(slot.record)
        self.flushes += 1
        try:
            outcomes = await self.sink.flush()
        except ChannelUnavailable as error:
            self._call_failed(batch, error.reason, error.retry_after)
            return
        except Exception as error:  # a bug or an unforeseen answer: keep the data, back off
            log.exception("sink %s: unexpected error from flush()", self.channel_id)
            self._call_failed(batch, f"{type(error).__name__}: {error}", None)
            return
        self._failures = 0
        await self._resolve(batch, outcomes)

    async def _send_bulk(self, sink: BulkSink, batch: list[_Slot]) -> None:
        self.flushes += 1
        try:
            outcomes = await sink.flush_bulk([slot.record for slot in batch])
        except Exception as error:
            reason = error.reason if isinstance(error, ChannelUnavailable) else repr(error)
            log.warning("sink %s: bulk of %d failed: %s", self.channel_id, len(batch), reason)
            self._metrics.call_failures.labels(self.channel_id).inc()
            self._requeue(batch)
        else:
            await self._resolve(batch, outcomes)
        finally:
            self._bulk = None
            self._wake.set()

    def _call_failed(self, batch: list[_Slot], reason: str, retry_after: float | None) -> None:
        self._failures += 1
        delay = self._backoff.delay(self._failures, retry_after)
        self._paused_until = self._clock() + delay
        self._metrics.call_failures.labels(self.channel_id).inc()
        log.warning(
            "sink %s: call failed (%s); %d records wait %.2fs (failure %d in a row)",
            self.channel_id,
            reason,
            len(batch),
            delay,
            self._failures,
        )
        self._requeue(batch)

    async def _resolve(self, batch: list[_Slot], outcomes: list[Outcome]) -> None:
        by_key = {outcome.channel_sku: outcome for outcome in outcomes}
        retry: list[_Slot] = []
        for slot in batch:
            outcome = by_key.get(slot.record.channel_sku)
            if outcome is None:
                outcome = Outcome.retry(slot.record.channel_sku, "the sink reported no outcome")
            if outcome.status == "ack":
                self._ack(slot)
            elif outcome.status == "reject":
                await self._reject(slot, outcome.reason)
            else:
                slot.attempts += 1
                if slot.attempts > MAX_ITEM_RETRIES:
                    await self._reject(
                        slot, f"gave up after {slot.attempts} attempts: {outcome.reason}"
                    )
                else:
                    retry.append(slot)
        self._requeue(retry)
        self._gauge()

    def _ack(self, slot: _Slot) -> None:
        key = slot.record.channel_sku
        del self._in_flight[key]
        self._acked[key] = max(self._acked.get(key, -1), slot.record.version)
        if self._settle > 0:
            self._shown[key] = slot.record.available
            waiting = self._buffer.get(key)
            if waiting is not None:
                self._classify(key, waiting)  # a sell-out no more once the channel shows 0
        self.offsets.done(slot.partition, slot.offset)
        self.acked += 1
        self._metrics.records_acked.labels(self.channel_id).inc()
        self._metrics.ack_latency.labels(self.channel_id).observe(self._clock() - slot.since)
        if self._on_ack is not None:
            self._on_ack(slot.record)

    async def _reject(self, slot: _Slot, reason: str) -> None:
        record = slot.record
        message = (
            f"channel {self.channel_id} rejected {record.channel_sku} v{record.version}: {reason}"
        )
        if self._dead_letter is not None:
            try:
                await self._dead_letter(record, slot.raw, slot.partition, slot.offset, message)
            except Exception:
                log.exception("sink %s: cannot write a dead letter; will retry", self.channel_id)
                self._call_failed([slot], "dead-letter write failed", None)
                return
        log.warning("%s", message)
        del self._in_flight[record.channel_sku]
        self.offsets.done(slot.partition, slot.offset)
        self.dead_lettered += 1
        self._metrics.dead_letters.labels(self.channel_id).inc()

    def _requeue(self, slots: list[_Slot]) -> None:
        """Back to the front of the queue, unless a newer version arrived meanwhile (it wins)."""
        front: dict[str, _Slot] = {}
        for slot in slots:
            key = slot.record.channel_sku
            self._in_flight.pop(key, None)
            self._sent_at.pop(key, None)  # not delivered: backoff, not the coalescing window, rules
            newer = self._buffer.get(key)
            if newer is not None:
                self.offsets.done(slot.partition, slot.offset)
                newer.since = min(newer.since, slot.since)
                newer.attempts = 0
            else:
                front[key] = slot
                if self._settle > 0:  # it was due when it went: due again
                    self._classify(key, slot)
                    self._mark_quiet(key, slot)
        if front:
            self._buffer = {**front, **self._buffer}
        self._gauge()
        self._wake.set()

    def _gauge(self) -> None:
        self._pending.set(self.pending)


async def _first(*aws: Awaitable[object]) -> bool:
    """Wait for the first of `aws` to finish and cancel the rest; True unless the first one won."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            if not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return tasks[0] not in done
