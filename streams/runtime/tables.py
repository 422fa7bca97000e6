"""The workers' tables as the topology keeps them: their record codecs, the changelog writes
deferred to each commit (a hot or wide SKU's record in parts), and the count of positions held."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson  # table records: several times faster than json on the hot path
from faust.serializers import codecs

from streams.core.state import SkuState, SplitCache, from_us, in_parts, part_key, to_us
from streams.runtime.outputs import Outputs
from streams.runtime.topics import partition_for

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ColdSku:
    """A SKU's record kept as its changelog bytes, decoded when the stage needs the SKU: ~130
    bytes a position for a SKU at 5 locations, against ~940 as a SkuState (a 1,000,000-position
    worker held 1.4 GB). What the worker reads of every record without an event on it (the
    clock, the catalog version, positions, whether a PO is expected) is kept beside the bytes.
    Only a SKU whose record is one record (neither split nor wide) is kept so."""

    data: bytes
    time_us: int
    catalog_version: int
    positions: int
    inbound: bool  # some location expects a PO: see SkuTable.rederive_inbound

    @classmethod
    def of_record(cls, data: bytes, record: dict[str, Any]) -> ColdSku:
        locations = record["l"]
        expects = any(loc["i"] for loc in locations.values())
        return cls(data, record["t"], record.get("v", 0), len(locations), expects)

    @classmethod
    def of_state(cls, data: bytes, state: SkuState) -> ColdSku:
        expects = any(loc.inbound for loc in state.locations.values())
        return cls(data, to_us(state.time), state.catalog_version, len(state.locations), expects)

    def state(self) -> SkuState:
        return SkuState.from_dict(orjson.loads(self.data))


class _JsonCodec(codecs.Codec):
    """A table record as its JSON, what a restart recovers: decoded into its state when first
    read (StageTable.get, SkuTable.load). The records are written by DeferredWrites,
    never through Faust, so only `_loads` runs."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


class _SkuCodec(_JsonCodec):
    """A SKU record as recovered: cold (ColdSku) if it is one record; the decoded JSON if it is
    in parts, until its parts are joined."""

    def _loads(self, s: bytes) -> Any:
        data = orjson.loads(s)
        return data if in_parts(data) else ColdSku.of_record(s, data)


codecs.register("sku-state", _SkuCodec())
codecs.register("table-json", _JsonCodec())


class DeferredWrites:
    """Table changelog writes coalesced to once per key per commit.

    Stages mutate state in memory; each changed record is written to its changelog right before
    Faust commits offsets (inside the same flush), so a hot SKU touched by every batch costs one
    changelog record per commit instead of one per batch, and the changelog always holds the state
    as of the committed offsets, which is exactly what a restart resumes from.

    The records go through the outputs' librdkafka producer, in the format Faust's changelog has
    (raw key; the table codec's JSON value; the key's murmur2 partition, as use_partitioner gives),
    at a fraction of the CPU of Faust's pure-Python producer. The memory store Faust recovers
    into keeps no changelog offsets, so nothing else about the send is Faust's business.

    The records are serialized and handed to librdkafka in slices of 2 ms, yielding to the event
    loop in between, so a commit that writes thousands of records does not stall the stages for
    tens of milliseconds (the p99 of the latency benchmark). A stage that runs in between may
    change a record not yet written: the changelog then holds a state newer than the offsets
    committed, which is safe, because each record carries the event ids it has applied (a
    redelivered event is recognised, its outputs sent again, its effect not applied twice).

    After the records are on the broker, each changelog partition written to gets one tombstone
    for a key no table uses, in a batch of its own. Tansu reports a partition's high watermark as
    the base offset of its last batch + 1, and Faust recovers a table by reading its changelog up
    to that watermark: without the marker, every record after the first in the last batch would be
    missing after a restart while the offsets of the events that made them are already committed.

    Faust flushes the producer from its commit timer and again when a rebalance revokes, so two
    writes can be asked for at once: the second waits for the first, or a state of a key still
    queued in the first would go out after a newer one (a recovery hands the stages new objects)
    and the changelog would keep the older. And a record of a partition this worker no longer owns
    (`owns`) is dropped: its new owner writes that changelog, and the events behind the change
    were not committed here (a rebalance forgets what was acknowledged), so the owner handles them.
    """

    MARKER = b"\x00end-of-commit"

    def __init__(
        self,
        outputs: Outputs,
        partitions: int,
        owns: Callable[[int], bool] | None = None,
        parts_topic: str | None = None,
        warm_skus: int | None = None,
    ) -> None:
        self.outputs = outputs
        self.partitions = partitions
        self.owns = owns  # None: every partition (tests, tools)
        # a hot SKU's record goes out in parts (split_record) on this changelog, in its SKU's
        # partition; a part is encoded and sent only when it changed since this worker last sent
        # it (SplitCache, per SKU key)
        self.parts_topic = parts_topic
        self.splits: dict[bytes, SplitCache] = {}
        self.pending: dict[tuple[str, bytes], Any] = {}  # (changelog topic, key) -> state
        self.written: set[tuple[str, int]] = set()  # (changelog topic, partition)
        self.unsettled: set[tuple[str, int]] = set()  # written since the last `settle`
        self.dropped = 0  # records of partitions not owned, left to their owner
        self.drops = 0  # the same, never reset (see settle)
        self._writing: asyncio.Future[None] | None = None  # the write in progress
        # whether the broker's readers see what it acknowledged (Outputs.reads_what_it_
        # acknowledges), probed once, at the first settle; until it says so, as if not
        self._reads_acknowledged: asyncio.Future[bool] | None = None
        # the SKU states written last, at most `warm_skus` (None: all) of them kept decoded; the
        # table keeps the others as their records' bytes (ColdSku). Per key, in the order put
        # or written: the table, the state, and its record's bytes once written (None until)
        self.warm_skus = warm_skus
        self.warm: OrderedDict[bytes, tuple[Any, SkuState, bytes | None]] = OrderedDict()
        # a key whose state a stage changed and has not put yet (take_now's, until its flush)
        self.busy: Callable[[bytes], bool] = lambda _key: False

    def put(self, table: Any, key: bytes, value: Any) -> None:
        table.data[key] = value  # visible to the stages at once; durable at the next commit
        # (or the next round of decisions: settle)
        self.pending[(table.changelog_topic.get_topic_name(), key)] = value
        if self.warm_skus is not None and type(value) is SkuState:
            self.warm[key] = (table, value, None)
            self.warm.move_to_end(key)

    def delete(self, table: Any, key: bytes) -> None:
        """Forget a record: gone at once, a tombstone on its changelog at the next commit (so
        recovery and compaction drop it too)."""
        table.data.pop(key, None)
        self.pending[(table.changelog_topic.get_topic_name(), key)] = None

    # work between two yields to the event loop: a record of a SKU with a week of delta ids and
    # order lines took the worker 28-65 µs to encode and send, a commit wrote ~1,000, and an event
    # needs several turns of the loop from fetch to output: slices of 100 records (3-7 ms) left
    # 45-100 ms gaps in the stages' output at commits
    YIELD_SECONDS = 0.002

    async def write(self) -> None:
        while self._writing is not None:  # one at a time, in the order asked
            await asyncio.shield(self._writing)
        done = self._writing = asyncio.get_running_loop().create_future()
        try:
            await self._write()
        finally:
            self._writing = None
            done.set_result(None)

    async def _write(self) -> None:
        pending, self.pending = self.pending, {}
        clock = time.perf_counter
        until = clock() + self.YIELD_SECONDS
        later: list[tuple[str, bytes, bytes, int]] = []  # records sent once their parts are stored
        for (topic, key), value in pending.items():
            partition = partition_for(key, self.partitions)
            if self._disowned(partition):
                continue
            if isinstance(value, SkuState) and self.parts_topic is not None:
                split = self.splits.get(key)
                if split is None:
                    split = self.splits[key] = SplitCache()
                record, changed = split.split(value)
                encoded = orjson.dumps(record)
                if split.parts_first:  # it splits the SKU: see streams.core.state.PART_ENTRIES
                    later.append((topic, key, encoded, partition))
                else:
                    self.outputs.send(topic, key, encoded, partition)
                for name in changed:
                    part = orjson.dumps(split.value(name))
                    self.outputs.send(self.parts_topic, part_key(key, name), part, partition)
                if changed:
                    self.written.add((self.parts_topic, partition))
                    self.unsettled.add((self.parts_topic, partition))
                if not split.parts and not value.wide:  # a record of its own: nothing to keep
                    del self.splits[key]
                    if self.warm_skus is not None:
                        self._written(key, value, encoded)
                else:  # split or wide, for good: never kept cold
                    self.warm.pop(key, None)
            else:
                self.outputs.send(
                    topic, key, None if value is None else orjson.dumps(value.to_dict()), partition
                )
            self.written.add((topic, partition))
            self.unsettled.add((topic, partition))
            if clock() >= until:
                await asyncio.sleep(0)
                until = clock() + self.YIELD_SECONDS
        if later:
            await self._after_parts(later)
        if self.warm_skus is not None:
            self.cool()

    def warmed(self, table: Any, key: bytes, state: SkuState, encoded: bytes) -> None:
        """A cold SKU decoded (`encoded`: its record's bytes): the table holds the state now."""
        table.data[key] = state
        self.warm[key] = (table, state, encoded)
        self.warm.move_to_end(key)

    def _written(self, key: bytes, state: SkuState, encoded: bytes) -> None:
        entry = self.warm.get(key)
        if entry is not None and entry[1] is state:  # not put again since: these are its bytes
            # a copy of the exact size: orjson's output keeps the capacity it grew to (4,089
            # bytes held for a 631-byte record, more than the SkuState it would replace)
            self.warm[key] = (entry[0], state, bytes(memoryview(encoded)))

    def cool(self) -> None:
        """Keep the states written longest ago, past `warm_skus`, as their records' bytes: each
        as it was written, and only if no stage changed it since (it would have been put again,
        or be `busy`) and the table still holds it (a rebalance may have taken it)."""
        assert self.warm_skus is not None
        warm = self.warm
        while len(warm) > self.warm_skus:
            key, (table, state, encoded) = next(iter(warm.items()))
            if self.busy(key):
                break
            if encoded is None:
                if (table.changelog_topic.get_topic_name(), key) in self.pending:
                    break  # changed since its write: cooled after the next
                del warm[key]  # not written here (a partition this worker no longer owns)
                continue
            del warm[key]
            if table.data.get(key) is state and not state.part_bits and not state.wide:
                table.data[key] = ColdSku.of_state(encoded, state)

    async def _after_parts(self, records: list[tuple[str, bytes, bytes, int]]) -> None:
        """Send the records of writes that split a SKU once the parts sent before them are on
        the broker: a marker on each of their partitions of the parts changelog, acknowledged,
        means every part before it is stored (the producer is idempotent). One broker round trip,
        once in a SKU's life. A partition that left this worker meanwhile: its record is dropped,
        as any of a partition not owned (the parts stored without it are not read)."""
        assert self.parts_topic is not None
        partitions = sorted({partition for *_, partition in records})
        await self.outputs.sent([(self.parts_topic, self.MARKER, None, p) for p in partitions])
        for topic, key, encoded, partition in records:
            if not self._disowned(partition):
                self.outputs.send(topic, key, encoded, partition)

    def _disowned(self, partition: int) -> bool:
        """Whether a record of `partition` is left to its owner: counted as dropped."""
        if self.owns is None or self.owns(partition):
            return False
        self.dropped += 1
        self.drops += 1
        return True

    async def write_all_then(self, release: Callable[[], None]) -> None:
        """Write every pending change (after the write in progress), then call `release` with no
        await between the last look at `pending` and the call.

        For a revoke: Faust pops the revoked partitions' acknowledgements when the revoke begins,
        and a commit its timer began before can still be flushing, with offsets taken before;
        records of a batch handled in between are then committed by it. If `owns` stopped
        covering those partitions first, the part of that flush not yet sent and the next write
        would drop their changes, while their events stay committed: lost (the likely cause of a
        pick of 3 units lost once in bench/faults.py worker-kill on Kafka). Written first, nothing
        handled before the partitions leave is dropped; from `release` on, the stage disowns
        their records.
        """
        await self.write()
        while self.pending:
            await self.write()
        release()

    async def settle(self, drops: int) -> bool:
        """Write every pending change, then return once each record written so far (by this
        write or an earlier one) is on the broker and a recovery reads it; False if a change
        was dropped since `drops` was read (its partition left this worker: its new owner
        handles the events behind it again).

        A marker after the records on each partition written to, acknowledged, means the records
        before it are stored (the producer is idempotent). On a broker whose watermark stops at
        the first record of a partition's last batch (Tansu), a second one: the first marker may
        have shared a batch with the records. Apache Kafka's watermark covers every record it
        acknowledged, so there one marker is all a decision waits for (one broker round trip
        instead of two)."""
        await self.write()
        written, self.unsettled = sorted(self.unsettled), set()
        markers = [(topic, self.MARKER, None, partition) for topic, partition in written]
        await self.outputs.sent(markers)
        if not self._reads_what_it_acknowledges(written):
            await self.outputs.sent(markers)
        return self.drops == drops

    def _reads_what_it_acknowledges(self, written: list[tuple[str, int]]) -> bool:
        probe = self._reads_acknowledged
        if probe is None and written:
            topic, partition = written[0]
            loop = asyncio.get_running_loop()
            probe = self._reads_acknowledged = loop.run_in_executor(
                None, self.outputs.reads_what_it_acknowledges, topic, partition, self.MARKER
            )
            probe.add_done_callback(self._probed)
        return probe is not None and probe.done() and not probe.exception() and probe.result()

    @staticmethod
    def _probed(probe: asyncio.Future[bool]) -> None:
        if probe.exception():
            log.warning("the broker's watermarks could not be probed: %s", probe.exception())
        elif probe.result():
            log.info("the broker's readers see what it acknowledged: one marker per decision round")

    def forget_sent(self) -> None:
        """After a rebalance another worker may have written parts since: send each part again."""
        self.splits.clear()

    def mark(self) -> bool:
        written, self.written = self.written, set()
        for topic, partition in written:
            self.outputs.send(topic, self.MARKER, None, partition)
        return bool(written)


def state_time(value: Any) -> datetime:
    """A SKU record's latest business time: decoded, cold, or as recovered (a dict: in parts)."""
    if isinstance(value, ColdSku):
        return from_us(value.time_us)
    return from_us(value["t"]) if isinstance(value, dict) else cast(SkuState, value).time


def positions_in(states: Iterable[Any]) -> int:
    """(SKU, location) positions in SKU table values: decoded, cold, or as recovered (dicts)."""
    return sum(_positions(value) for value in states)


def _positions(value: Any) -> int:
    if isinstance(value, ColdSku):
        return value.positions
    if isinstance(value, dict):  # in parts: a wide SKU's record counts its locations ("w")
        return int(value.get("w") or len(value["l"]))
    return len(cast(SkuState, value).locations)


class PositionCount:
    """The positions the SKU table holds, kept on every write, so the monitor reads it in O(1)
    instead of walking every SKU record on the event loop every MONITOR_SECONDS.

    Only the stages write SKU records; a rebalance changes which records the table holds without
    a write, so after one (`stale`) the count is taken again in full, once.
    """

    def __init__(self) -> None:
        self.per_sku: dict[bytes, int] = {}
        self.total = 0
        self.stale = True

    def put(self, key: bytes, positions: int) -> None:
        before = self.per_sku.get(key, 0)
        if positions != before:
            self.per_sku[key] = positions
            self.total += positions - before

    def recount(self, table: Iterable[tuple[bytes, Any]]) -> None:
        self.per_sku = {key: positions_in((value,)) for key, value in table}
        self.total = sum(self.per_sku.values())
        self.stale = False
