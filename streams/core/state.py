"""Per-SKU state: quantities, reservation table and dedupe/ordering memory all live in ONE record.

Idempotence is structural and lives in the same record as the quantities it protects: a delta's id
in its bucket's delta log, a pick's or cancel's id in its order line, a schedule's or receipt's id
in its PO, a hold under its reservation id. So at-least-once delivery may apply a record twice
without counting it twice, and the record grows with open business, not with traffic.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUCKETS = ("sellable", "damaged", "quarantine")
# how long a SKU remembers event ids, and how late a count may be: older ones are not applied
DEDUPE_HORIZON = timedelta(days=7)
# how long past its expiry a hold is kept (its release may still come), and a released or refused
# id remembered: the hourly pruning drops what is older
ORPHAN_GRACE = timedelta(hours=1)


def to_us(value: datetime) -> int:
    # from the timedelta's fields: a sixth of the cost of `// timedelta(microseconds=1)`, and a
    # table record's encoding (every commit, for every SKU changed) converts hundreds of times
    since = value - EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


@dataclass(slots=True)
class Bucket:
    """One bucket's quantity with the memory the ordering rules need."""

    qty: int = 0
    count_at: datetime | None = None  # business time of the last applied count
    count_id: str = ""  # its event id: breaks ties between counts of the same instant
    # deltas applied after count_at, by event id: what a later count keeps on top, and what makes
    # a redelivered delta recognisable. Only grows in place; a count and the daily pruning
    # replace it with a new dict (SplitCache relies on both)
    log: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    # the last count's quantity (0 before any): qty is base + the deltas in `log` + the deltas
    # the daily pruning forgot since that count
    base: int = 0

    def to_dict(self, log: bool = True) -> list[Any]:
        """Encoded; without the delta log if `log` is false (a hot SKU's parts hold it)."""
        at = to_us(self.count_at) if self.count_at else None
        entries = {k: [to_us(t), d] for k, (t, d) in self.log.items()} if log else {}
        return [self.qty, at, self.count_id, entries, self.base]

    @classmethod
    def from_dict(cls, data: list[Any]) -> Bucket:
        qty, at, cid, encoded = data[:4]
        log = {k: (from_us(t), d) for k, (t, d) in encoded.items()}
        # written before `base`: what the deltas forgotten since the count added is in it
        base = data[4] if len(data) > 4 else qty - sum(d for _, d in log.values())
        return cls(qty, from_us(at) if at is not None else None, cid, log, base)


@dataclass(slots=True)
class Inbound:
    """Expected units of one PO: schedules and receipts by event id, so they commute and dedupe."""

    schedules: dict[str, int] = field(default_factory=dict)
    receipts: dict[str, int] = field(default_factory=dict)
    eta: date | None = None
    at: datetime | None = None  # business time of the schedule that set the eta
    eta_id: str = ""  # its event id: of two schedules of one instant, the greater id sets the eta
    touched_at: datetime | None = None  # latest business time of a schedule or receipt (pruning)

    @property
    def quantity(self) -> int:
        return max(0, sum(self.schedules.values()) - sum(self.receipts.values()))


@dataclass(slots=True)
class LocationState:
    sellable: Bucket = field(default_factory=Bucket)
    damaged: Bucket = field(default_factory=Bucket)
    quarantine: Bucket = field(default_factory=Bucket)
    reserved: int = 0  # Σ holds at this location (kept in step with SkuState.holds)
    committed: int = 0  # Σ open commitments at this location
    inbound: dict[str, Inbound] = field(default_factory=dict)  # po_id -> expected units
    version: int = 0  # of the position record

    @property
    def on_hand(self) -> int:
        return self.sellable.qty

    @property
    def incoming(self) -> int:
        return sum(i.quantity for i in self.inbound.values())

    def bucket(self, name: str) -> Bucket:
        if name == "sellable":
            return self.sellable
        if name == "damaged":
            return self.damaged
        return self.quarantine

    def to_dict(self, logs: bool = True) -> dict[str, Any]:
        return {
            "b": [
                self.sellable.to_dict(logs),
                self.damaged.to_dict(logs),
                self.quarantine.to_dict(logs),
            ],
            "r": self.reserved,
            "c": self.committed,
            "i": {
                p: [
                    i.schedules,
                    i.receipts,
                    i.eta.toordinal() if i.eta else None,
                    to_us(i.at) if i.at else None,
                    i.eta_id,
                    to_us(i.touched_at) if i.touched_at else None,
                ]
                for p, i in self.inbound.items()
            },
            "v": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocationState:
        s, d, q = (Bucket.from_dict(b) for b in data["b"])
        inbound = {
            p: Inbound(
                dict(i[0]),
                dict(i[1]),
                date.fromordinal(i[2]) if i[2] is not None else None,
                from_us(i[3]) if i[3] is not None else None,
                i[4] if len(i) > 4 else "",
                from_us(i[5]) if len(i) > 5 and i[5] is not None else None,
            )
            for p, i in data["i"].items()
        }
        return cls(s, d, q, data["r"], data["c"], inbound, data["v"])


@dataclass(slots=True)
class Hold:
    """A checkout hold of one reservation on this SKU: units per location."""

    channel: str
    units: dict[str, int]
    expires_at: datetime

    def to_dict(self) -> list[Any]:
        return [self.channel, self.units, to_us(self.expires_at)]

    @classmethod
    def from_dict(cls, data: list[Any]) -> Hold:
        return cls(data[0], dict(data[1]), from_us(data[2]))


@dataclass(slots=True)
class Commitment:
    """One order line, committed at one or more locations (a confirmed hold split across several).

    Picks and cancels are kept by event id, so they commute and a redelivery is a no-op; what is
    still open at each location is a function of the sets of them, never of their arrival order.
    """

    parts: dict[str, int] = field(default_factory=dict)  # location -> units, in placement order
    picks: dict[str, tuple[str, int]] = field(default_factory=dict)  # event id -> (location, units)
    cancels: dict[str, int] = field(default_factory=dict)  # -1 = cancel what is still open
    touched_at: datetime | None = None
    # len(order_id) of its key "order_id/line_id": both ids may hold "/", and a forgotten line is
    # reported to its order's record (0: written before, split at the first "/")
    order_len: int = 0

    @property
    def open(self) -> int:
        return sum(self.open_at().values())

    def open_at(self) -> dict[str, int]:
        """Open units per location: a pick releases its own location's part first and whatever
        exceeds it (a pick elsewhere included) from the others; cancels release the parts placed
        last first. Never below zero, never more than was ordered."""
        parts = self.parts
        if not self.picks and not self.cancels:
            return dict(parts)
        if -1 in self.cancels.values():
            return dict.fromkeys(parts, 0)
        remaining = dict(parts)
        picked: dict[str, int] = {}
        for loc, units in self.picks.values():
            picked[loc] = picked.get(loc, 0) + units
        excess = sum(self.cancels.values())
        for loc, units in picked.items():
            have = remaining.get(loc)
            if have is None:
                excess += units
                continue
            take = min(have, units)
            remaining[loc] = have - take
            excess += units - take
        for loc in reversed(parts):
            if excess <= 0:
                break
            take = min(remaining[loc], excess)
            remaining[loc] -= take
            excess -= take
        return remaining

    def to_dict(self) -> list[Any]:
        at = to_us(self.touched_at) if self.touched_at else None
        picks = {k: [loc, units] for k, (loc, units) in self.picks.items()}
        return [self.parts, picks, self.cancels, at, self.order_len]

    @classmethod
    def from_dict(cls, data: list[Any]) -> Commitment:
        if len(data) == 5 and not isinstance(data[0], dict):
            # written before lines could be split: one location, picks without one
            loc, ordered, picks, cancels, at = data
            parts = {loc: ordered} if loc and ordered > 0 else {}
            return cls(
                parts,
                {k: (loc, units) for k, units in picks.items()},
                dict(cancels),
                from_us(at) if at is not None else None,
            )
        parts, picks, cancels, at = data[:4]
        return cls(
            dict(parts),
            {k: (loc, units) for k, (loc, units) in picks.items()},
            dict(cancels),
            from_us(at) if at is not None else None,
            data[4] if len(data) > 4 else 0,
        )


@dataclass(slots=True)
class Published:
    """The last availability value sent for one listing, so only changes are emitted."""

    available: int
    backorderable: int
    restock_date: date | None
    version: int

    def to_dict(self) -> list[Any]:
        rd = self.restock_date.toordinal() if self.restock_date else None
        return [self.available, self.backorderable, rd, self.version]

    @classmethod
    def from_dict(cls, data: list[Any]) -> Published:
        a, b, rd, v = data
        return cls(a, b, date.fromordinal(rd) if rd is not None else None, v)


@dataclass(slots=True)
class SkuState:
    sku: str
    locations: dict[str, LocationState] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)  # reservation_id -> hold
    commitments: dict[str, Commitment] = field(default_factory=dict)  # "order_id/line_id"
    closed: dict[str, datetime] = field(default_factory=dict)  # released holds -> their expiry
    refused: dict[str, datetime] = field(default_factory=dict)  # refused requests -> their expiry
    published: dict[str, Published] = field(default_factory=dict)  # "channel/channel_sku"
    time: datetime = EPOCH  # latest business time seen for this SKU
    pruned_day: int = 0  # business hour (day ordinal * 24 + hour) of the last pruning
    # holds, closed and refused ids expiring before this were dropped by the last pruning (its
    # business time - ORPHAN_GRACE); none expiring before it is made after (see join_record)
    orphans_before: datetime = EPOCH
    catalog_version: int = 0  # the catalog its published values were last derived under
    # how its changelog record is split (split_record): 2**part_bits parts, 0 = one record; only
    # grows, so a part once written is always read back
    part_bits: int = field(default=0, compare=False)
    # the id of the write that split it, in its record and every part (`"s"`): parts a write
    # that was to split it stored before a kill are not read with a later split's record
    split_id: str = field(default="", compare=False)
    # keys of the order lines made or changed since SplitCache last split this state (the stage
    # notes each; never in the record): a hot SKU's write encodes those, not all its lines
    lines_changed: set[str] = field(default_factory=set, compare=False)
    # reservation ids whose hold, closed or refused entry was made, changed or dropped since
    # SplitCache last split this state: noted (note_id) only once the SKU is split, so a SKU that
    # never is (simulate's) keeps none
    ids_changed: set[str] = field(default_factory=set, compare=False)
    # a hot SKU's deltas the daily pruning forgot, in the parts that held them (SplitCache):
    # bucket key (_buckets) -> part -> [the latest business time among them, their units]
    folded_parts: dict[str, dict[int, list[int]]] | None = field(default=None, compare=False)
    # whether each location is a record of its own (past WIDE_LOCATIONS; only becomes true, so a
    # location record once written is always read back)
    wide: bool = field(default=False, compare=False)
    # the locations looked up (location()) since SplitCache last split this state: noted only
    # once the SKU is wide, so a SKU that never is keeps none
    locations_changed: set[str] = field(default_factory=set, compare=False)

    def note_id(self, reservation_id: str) -> None:
        """A hold, closed or refused id made, changed or dropped (see ids_changed)."""
        if self.part_bits:
            self.ids_changed.add(reservation_id)

    def location(self, loc: str) -> LocationState:
        """The location's state (made if absent); of a wide SKU, noted as changed: every change
        of a location goes through here (see locations_changed)."""
        if self.wide:
            self.locations_changed.add(loc)
        state = self.locations.get(loc)
        if state is None:
            state = self.locations[loc] = LocationState()
        return state

    def to_dict(self, logs: bool = True, locations: bool = True) -> dict[str, Any]:
        data = self.head_dict(logs, locations)
        data["h"] = {k: v.to_dict() for k, v in self.holds.items()}
        data["c"] = {k: v.to_dict() for k, v in self.commitments.items()}
        data["x"] = {k: to_us(v) for k, v in self.closed.items()}
        data["r"] = {k: to_us(v) for k, v in self.refused.items()}
        return data

    def head_dict(self, logs: bool = True, locations: bool = True) -> dict[str, Any]:
        """to_dict without the order lines, holds, closed and refused ids, without the delta
        logs if `logs` is false (a hot SKU's parts hold them), and without the locations if
        `locations` is false (a wide SKU's location records hold them)."""
        return {
            "sku": self.sku,
            "l": {k: v.to_dict(logs) for k, v in self.locations.items()} if locations else {},
            "h": {},
            "c": {},
            "x": {},
            "r": {},
            "p": {k: v.to_dict() for k, v in self.published.items()},
            "t": to_us(self.time),
            "d": self.pruned_day,
            "g": to_us(self.orphans_before),
            "v": self.catalog_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkuState:
        return cls(
            sku=data["sku"],
            locations={k: LocationState.from_dict(v) for k, v in data["l"].items()},
            holds={k: Hold.from_dict(v) for k, v in data["h"].items()},
            commitments={k: Commitment.from_dict(v) for k, v in data["c"].items()},
            closed={k: from_us(v) for k, v in data["x"].items()},
            refused={k: from_us(v) for k, v in data.get("r", {}).items()},
            published={k: Published.from_dict(v) for k, v in data["p"].items()},
            time=from_us(data["t"]),
            pruned_day=data["d"],
            orphans_before=from_us(data.get("g", 0)),
            catalog_version=data.get("v", 0),
        )


# ---- a hot SKU's record, in parts ---------------------------------------------------------------

# Open business lives in the SKU's record, and a hot SKU (a launch: tens of thousands of open
# order lines, or holds; a best seller: a week of sales in its delta logs) outgrows a Kafka
# record (1 MB by default; the worker used to die on MSG_SIZE_TOO_LARGE at ~17,000 open lines,
# and again after every restart). Past PART_ENTRIES entries, its order lines, holds, closed and
# refused reservation ids and delta-log entries go to 2**bits part records, each entry by the
# CRC-32 of its key; the SKU's own record keeps the rest and the number of parts.
#
# The record and its parts are stored each on its own, on two changelogs: a kill can leave any of
# them one write older than the others, and the events of that write are redelivered. So every
# part is right on its own: the record's counts are recounted from the entries (recount), and a
# bucket's quantity is its last count (`base`, in the record) plus the deltas in the parts after
# that count plus, per part, the deltas the daily pruning forgot from that part since (`"f"`:
# [the latest business time among them, their units], changed in the same part record as the
# entries it replaces). A count drops what came before it on join, in whatever part it still is.
#
# A write that adds parts (2**b -> 2**(b+k)) rewrites every part, and each entry moves from part
# i to one of i, i + 2**b, ...: the CRC's next bits. A kill in the middle of it must leave no
# entry behind. The parts of a SKU go to one partition of one changelog in the order sent, so a
# kill stores a prefix of them: they are sent highest index first, and a new-layout part i (low)
# is stored only after every part that takes entries from it. Each part says its layout (`"n"`:
# b + k), and join_record takes each entry from the part of the newest layout that holds it.
#
# The write that splits a SKU replaces its whole record with one that holds no entry: it goes out
# only once its parts are stored (SplitCache.parts_first; DeferredWrites waits for them), so a
# kill keeps either the whole record or the split one with every part. Parts stored before a kill
# that kept the whole record are left on the changelog: every part names the write that split
# the SKU (`"s"`: a random id, in the record too), and a part of another is not read.
PART_ENTRIES = 512  # ~27 KB of order lines per part
# A SKU stocked at many locations (a chain's stores: 200) is wide: a commit that wrote its whole
# record re-encoded every location (8.9 KB of changelog and ~360 µs of worker CPU per event at 200
# locations). Past WIDE_LOCATIONS, each location is a record of its own beside the SKU's record,
# and one more holds the index of them, written when a location is added: a write sends the SKU's
# record and the locations that changed. Each is right on its own as the parts are (the counts
# are recounted; a location the index names but not yet stored is one whose events are
# redelivered).
WIDE_LOCATIONS = 16
PART_FIELDS = ("c", "h", "x", "r")  # order lines, holds, closed ids, refused ids
# and, per bucket key (_buckets): "e" its delta-log entries, "f" the deltas forgotten from them


def _part_bits(state: SkuState) -> int:
    """How many parts (2**bits) the SKU's record needs now: never fewer than it had."""
    entries = len(state.commitments) + len(state.holds) + len(state.closed) + len(state.refused)
    for loc in state.locations.values():
        entries += len(loc.sellable.log) + len(loc.damaged.log) + len(loc.quarantine.log)
    bits = state.part_bits
    while (entries >> bits) > PART_ENTRIES:
        bits += 1
    return bits


def _empty_part(bits: int, split_id: str) -> dict[str, Any]:
    """A part of the layout of 2**bits parts ("n": see join_record) of the split `split_id`."""
    return {"n": bits, "s": split_id, **{name: {} for name in (*PART_FIELDS, "e", "f")}}


def _new_split(state: SkuState) -> str:
    """The id of the write that splits the SKU (see PART_ENTRIES)."""
    state.split_id = os.urandom(4).hex()
    return state.split_id


def _of_split(part: dict[str, Any] | None, split_id: str) -> dict[str, Any] | None:
    """`part` if it is of the split `split_id` (parts written before `"s"` are of ""), else None:
    left by a write that was to split the SKU and did not."""
    return part if part is not None and part.get("s", "") == split_id else None


def _buckets(state: SkuState) -> Iterator[tuple[str, Bucket]]:
    """Each bucket with its key in the parts: its index in BUCKETS, then its location."""
    for loc_id, loc in state.locations.items():
        yield "0" + loc_id, loc.sellable
        yield "1" + loc_id, loc.damaged
        yield "2" + loc_id, loc.quarantine


def _part_of(key: str, mask: int) -> int:
    return zlib.crc32(key.encode()) & mask


def _folds(state: SkuState, key: str, bucket: Bucket, logged: int) -> dict[int, list[int]]:
    """The bucket's forgotten deltas per part, as its parts are to hold them: those from before
    its last count dropped, and any the parts do not account for (the pruning forgot them before
    the SKU was split, or between two writes this worker could not compare) with part 0.
    `logged` is the sum of the deltas in its log."""
    count_at = to_us(bucket.count_at) if bucket.count_at is not None else -1
    known = (state.folded_parts or {}).get(key, {})
    folds = {index: list(fold) for index, fold in known.items() if fold[0] > count_at}
    missing = bucket.qty - bucket.base - logged - sum(fold[1] for fold in folds.values())
    if missing:
        fold = folds.setdefault(0, [0, 0])
        # forgotten by a pruning since the count: before its horizon, after the count
        fold[0] = max(fold[0], to_us(state.time - DEDUPE_HORIZON), count_at + 1)
        fold[1] += missing
    return folds


def split_record(state: SkuState) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The SKU's changelog record and its parts (none until it holds more than PART_ENTRIES
    order lines, holds, closed and refused ids and delta-log entries), its locations in the
    record (SplitCache puts a wide SKU's in records of their own)."""
    bits = _part_bits(state)
    if bits == 0:
        return state.to_dict(), []
    split_id = state.split_id if state.part_bits else _new_split(state)
    state.part_bits = bits
    data = state.to_dict(logs=False)
    mask = (1 << bits) - 1
    parts = [_empty_part(bits, split_id) for _ in range(mask + 1)]
    for name in PART_FIELDS:
        for key, value in data[name].items():
            parts[_part_of(key, mask)][name][key] = value
        data[name] = {}
    for key, bucket in _buckets(state):
        for event_id, (at, delta) in bucket.log.items():
            parts[_part_of(event_id, mask)]["e"].setdefault(key, {})[event_id] = [to_us(at), delta]
        logged = sum(delta for _, delta in bucket.log.values())
        for index, fold in _folds(state, key, bucket, logged).items():
            parts[index]["f"][key] = fold
    data["b"] = bits
    data["s"] = split_id
    return data, parts


class SplitCache:
    """split_record for one SKU, kept between its writes, so a write encodes only the entries and
    parts that changed since the last one: a hot SKU's whole record took ~5 ms to split at 2,699
    holds and 4,801 closed ids, and the worker writes it before each round of reservation decisions.

    Of the state object split last time, the order lines in its `lines_changed` and the holds,
    closed and refused ids in its `ids_changed` are encoded again (the SKU stage notes each it
    makes, changes or drops); of another object (recovered, or first seen), every one is encoded
    and compared: a flash sale's 20,000 holds and 20,000 closed ids took 2 ms a write to compare,
    100,000 of each 25 ms, and the worker writes the SKU before each round of decisions. A delta log
    only grows in place (its new entries are its last), and is replaced by a count or the daily
    pruning: then it is compared with the one seen, and what the pruning forgot is added to the
    forgotten deltas of the part that held it, in the same part record."""

    def __init__(self) -> None:
        self.bits = 0
        self.parts: list[dict[str, Any]] = []  # the parts, encoded, as last split
        self.lines: dict[str, int] = {}  # order line key -> its part
        self.state: SkuState | None = None  # the state object split last time
        # bucket key -> its delta log object seen last time, its length and the sum of its deltas
        self.logs: dict[str, tuple[dict[str, tuple[datetime, int]], int, int]] = {}
        # of a wide SKU: the state object placed last time, with or without delta logs in its
        # location records, and how many locations the index written names. No copy of the
        # records: at 200 stores a copy of each took ~950 bytes a position (bench/scale.py)
        self.placed: SkuState | None = None
        self.placed_logs = True
        self.indexed = 0
        # whether the record of the last split must go out only once the records beside it
        # are stored: of the write that split the SKU (see PART_ENTRIES)
        self.parts_first = False

    def split(self, state: SkuState) -> tuple[dict[str, Any], list[int | str]]:
        """split_record's record, and the names of the records beside it that changed since the
        last split (their values: `value`): the indexes of the parts (every part after the
        number of parts grew, or at the first split), and of a wide SKU the ids of the locations
        and "" for the index of them."""
        bits = _part_bits(state)
        wide = state.wide or len(state.locations) > WIDE_LOCATIONS
        self.parts_first = False
        if not bits and not wide:
            self._reset(0)
            state.lines_changed.clear()
            return state.to_dict(), []
        changed: list[int | str] = []
        # the write that makes the SKU wide keeps its locations in its record too: a kill may
        # store the record without the index of its location records
        whole = not state.wide
        first = bits and not state.part_bits  # the write that splits the SKU
        if bits:
            if first:
                _new_split(state)
                self.parts_first = True
            changed.extend(self._split_parts(state, bits))
            record = state.head_dict(logs=False, locations=whole)
            record["b"] = bits
            record["s"] = state.split_id
        else:
            state.lines_changed.clear()
            record = state.to_dict(locations=whole)
        if wide:
            state.wide = True
            # the split's location records keep their delta logs: a kill may store them and
            # not the record that says the logs are in the parts now
            changed.extend(self._place(state, logs=not bits or bool(first)))
            record["w"] = len(state.locations)
        return record, changed

    def value(self, name: int | str) -> Any:
        """The record `name` (of split's) as last split, to be encoded before the state changes
        again (a location's record is encoded from the state)."""
        if isinstance(name, int):
            return self.parts[name]
        assert self.placed is not None
        if name == "":
            return list(self.placed.locations)
        return self.placed.locations[name].to_dict(self.placed_logs)

    def _place(self, state: SkuState, logs: bool) -> list[str]:
        """A wide SKU's location records to write, and "" if the index of them changed: of the
        state object placed last time, the locations it noted; of another, every one."""
        same = state is self.placed and logs == self.placed_logs
        names = state.locations_changed if same else state.locations
        changed = [loc_id for loc_id in names if loc_id in state.locations]
        state.locations_changed.clear()
        if not same or self.indexed != len(state.locations):  # locations are never dropped
            self.indexed = len(state.locations)
            changed.append("")
        self.placed, self.placed_logs = state, logs
        return changed

    def _split_parts(self, state: SkuState, bits: int) -> list[int]:
        """The parts that changed since the last split, each encoded in `parts`."""
        state.part_bits = bits
        changed: set[int] = set()
        same = state is self.state
        if bits != self.bits:
            if self.bits and same:  # what the pruning forgot since, with the parts that held it
                for key, bucket in _buckets(state):
                    seen = self.logs.get(key)
                    if seen is not None and seen[0] is not bucket.log:
                        self._forget(state, key, bucket, seen[0], (1 << self.bits) - 1, None)
            self._reset(bits, state.split_id)
            same = False  # every entry goes to the new parts
            changed.update(range(1 << bits))
        mask = (1 << bits) - 1
        parts = self.parts

        if same:
            for rid in state.ids_changed:
                index = _part_of(rid, mask)
                for name, entry in _id_entries(state, rid):
                    if _put(parts[index][name], rid, entry):
                        changed.add(index)
        else:
            _compare_ids(state, parts, mask, changed)
        state.ids_changed.clear()

        lines = self.lines
        commitments = state.commitments
        keys = state.lines_changed if same else commitments
        for key in keys:
            line = commitments.get(key)
            if line is None:
                continue  # made and forgotten since: gone below
            found = lines.get(key)
            index = _part_of(key, mask) if found is None else found
            lines[key] = index
            encoded = line.to_dict()
            if parts[index]["c"].get(key) != encoded:
                parts[index]["c"][key] = encoded
                changed.add(index)
        state.lines_changed.clear()
        self.state = state
        if len(lines) != len(state.commitments):
            for key in [k for k in lines if k not in state.commitments]:
                index = lines.pop(key)
                del parts[index]["c"][key]
                changed.add(index)

        for key, bucket in _buckets(state):
            self._log(state, key, bucket, mask, changed, same)
        return sorted(changed, reverse=True)  # see join_record

    def _log(
        self, state: SkuState, key: str, bucket: Bucket, mask: int, changed: set[int], same: bool
    ) -> None:
        """Encode what changed in one bucket's delta log since the last split (`same`: of the
        state object split last time)."""
        parts = self.parts
        log = bucket.log
        seen = self.logs.get(key)
        if seen is not None and seen[0] is log:  # grown in place, if at all: its last entries
            grown = len(log) - seen[1]
            if grown:
                logged = seen[2]
                for event_id in islice(reversed(log), grown):
                    at, delta = log[event_id]
                    logged += delta
                    index = _part_of(event_id, mask)
                    parts[index]["e"].setdefault(key, {})[event_id] = [to_us(at), delta]
                    changed.add(index)
                self.logs[key] = (log, len(log), logged)
            return
        # a new log: counted, pruned, recovered, or a bucket not seen yet
        written: dict[str, tuple[datetime, int]] = {}
        if seen is not None:  # the old one may have grown since it was written
            self._forget(state, key, bucket, seen[0], mask, changed, fold=same)
            written = dict(islice(seen[0].items(), seen[1]))
        logged = 0
        for event_id, entry in log.items():
            at, delta = entry
            logged += delta
            if written.get(event_id) is entry:
                continue
            index = _part_of(event_id, mask)
            encoded = [to_us(at), delta]
            entries = parts[index]["e"].setdefault(key, {})
            if entries.get(event_id) != encoded:
                entries[event_id] = encoded
                changed.add(index)
        self.logs[key] = (log, len(log), logged)
        folds = _folds(state, key, bucket, logged)
        for index, part in enumerate(parts):
            if index not in folds and part["f"].pop(key, None) is not None:
                changed.add(index)
        for index, fold in folds.items():
            if parts[index]["f"].get(key) != fold:
                parts[index]["f"][key] = fold
                changed.add(index)
        _keep_folds(state, key, folds)

    def _forget(
        self,
        state: SkuState,
        key: str,
        bucket: Bucket,
        before: dict[str, tuple[datetime, int]],
        mask: int,
        changed: set[int] | None,
        fold: bool = True,
    ) -> None:
        """The entries of `before` gone from the bucket's log leave their parts (when `changed`
        is given); if `fold`, those the pruning forgot (after the last count: a count covers the
        others) are added to their part's forgotten deltas (of another state object, _folds
        finds what is missing)."""
        log = bucket.log
        count_at = bucket.count_at
        folds = {i: list(f) for i, f in (state.folded_parts or {}).get(key, {}).items()}
        for event_id, (at, delta) in before.items():
            if event_id in log:
                continue
            index = _part_of(event_id, mask)
            if changed is not None:
                entries = self.parts[index]["e"].get(key)
                if entries is not None and entries.pop(event_id, None) is not None:
                    changed.add(index)
                    if not entries:
                        del self.parts[index]["e"][key]
            if fold and (count_at is None or at > count_at):
                forgotten = folds.setdefault(index, [0, 0])
                forgotten[0] = max(forgotten[0], to_us(at))
                forgotten[1] += delta
        _keep_folds(state, key, folds)

    @classmethod
    def seeded(cls, state: SkuState, part: Callable[[int | str], Any]) -> SplitCache:
        """A cache for `state` as just joined (join_parts) from its changelog records, `part`
        looking up the records beside the SKU's as they are stored: its next write is what
        changed since them. A delta the daily pruning forgets from now on is then folded into
        the part that stored it. A cache that knows nothing (a new one) would put what it cannot
        place with part 0, and a kill that then stores part 0 and not the part that keeps the
        delta counts it twice (seen: a sale of 1 counted twice, tests/core/test_wide_records.py)."""
        cache = cls()
        bits = state.part_bits
        if bits:
            found = [_of_split(part(index), state.split_id) for index in range(1 << bits)]
            stored_parts = [
                p for i, p in enumerate(found) if p is not None and _whole_at(p, i, bits)
            ]
            if len(stored_parts) < len(found):
                return cls()  # a write that added parts, cut short: the next one writes all
            cache._reset(bits, state.split_id)
            for index, stored in enumerate(stored_parts):
                kept = cache.parts[index]
                for name in PART_FIELDS:
                    kept[name] = dict(stored.get(name, {}))
                for key, entries in stored.get("e", {}).items():
                    kept["e"][key] = dict(entries)
                kept["f"] = dict(stored.get("f", {}))
            for index, kept in enumerate(cache.parts):
                for key in kept["c"]:
                    cache.lines[key] = index
            for key, _ in _buckets(state):
                # the entries the parts hold, as the log they were written from
                log = {
                    event_id: (from_us(at), delta)
                    for p in cache.parts
                    for event_id, (at, delta) in p["e"].get(key, {}).items()
                }
                cache.logs[key] = (log, len(log), sum(delta for _, delta in log.values()))
            cache.state = state
        return cache  # of a wide SKU, every location is written once (placed is None)

    def _reset(self, bits: int, split_id: str = "") -> None:
        self.bits = bits
        self.parts = [_empty_part(bits, split_id) for _ in range(1 << bits)] if bits else []
        self.lines = {}
        self.state = None
        self.logs = {}


def _whole_at(part: dict[str, Any] | None, index: int, bits: int) -> bool:
    """Whether `part` is part `index` of the layout of 2**bits parts, holding only its entries."""
    if part is None or part.get("n", bits) != bits:
        return False
    mask = (1 << bits) - 1
    return all(
        _part_of(key, mask) == index for name in PART_FIELDS for key in part.get(name, {})
    ) and all(
        _part_of(event_id, mask) == index
        for entries in part.get("e", {}).values()
        for event_id in entries
    )


def _keep_folds(state: SkuState, key: str, folds: dict[int, list[int]]) -> None:
    if folds:
        if state.folded_parts is None:
            state.folded_parts = {}
        state.folded_parts[key] = folds
    elif state.folded_parts is not None:
        state.folded_parts.pop(key, None)


def _id_maps(state: SkuState) -> tuple[tuple[str, dict[str, Any], Callable[[Any], Any]], ...]:
    """The holds, closed and refused ids: each map with its part field and its encoding."""
    return (("h", state.holds, _hold_json), ("x", state.closed, to_us), ("r", state.refused, to_us))


def _id_entries(state: SkuState, rid: str) -> Iterator[tuple[str, Any]]:
    """A reservation id's hold, closed and refused entries as its part holds them (None: none)."""
    for name, now, encode in _id_maps(state):
        value = now.get(rid)
        yield name, None if value is None else encode(value)


def _put(entries: dict[str, Any], key: str, encoded: Any) -> bool:
    """Set (or drop, for None) one entry of a part; whether that changed it."""
    if encoded is None:
        return entries.pop(key, None) is not None
    if entries.get(key) == encoded:
        return False
    entries[key] = encoded
    return True


def _compare_ids(
    state: SkuState, parts: list[dict[str, Any]], mask: int, changed: set[int]
) -> None:
    """SplitCache.split for the holds, closed and refused ids of a state object it has not split
    before: every entry encoded and compared with its part, and the parts' others dropped."""
    for name, now, encode in _id_maps(state):
        for index, part in enumerate(parts):
            gone = [key for key in part[name] if key not in now]
            for key in gone:
                del part[name][key]
            if gone:
                changed.add(index)
        for rid, value in now.items():
            index = _part_of(rid, mask)
            if _put(parts[index][name], rid, encode(value)):
                changed.add(index)


def _hold_json(hold: Hold) -> list[Any]:
    return hold.to_dict()


def in_parts(data: dict[str, Any]) -> bool:
    """Whether a SKU's changelog record has records beside it to join (parts, or locations)."""
    return bool(data.get("b") or data.get("w"))


def part_count(data: dict[str, Any]) -> int:
    """How many parts a SKU's changelog record has (0: it is whole)."""
    bits: int = data.get("b", 0)
    return 1 << bits if bits else 0


def join_record(
    data: dict[str, Any],
    parts: Sequence[dict[str, Any] | None],
    places: Mapping[str, Any] | None = None,
) -> SkuState:
    """The SKU's state from its changelog record and its parts (split_record's inverse), and of
    a wide SKU its location records and their index ("") in `places` (SplitCache.split's).

    `parts` by index, None where none is stored: the record's number of parts, and after them
    the parts of a newer layout a kill stored without the record that says so (join_parts looks
    them up). Each entry is taken from the part that holds it in the newest layout stored (a
    part's `"n"`); a part older than its neighbours holds what its newer children would, until
    they are stored. A part of another split than the record's (`"s"`) is as if not stored.
    ValueError, naming the missing parts, if an entry's part is gone."""
    bits: int = data.get("b", 0)
    split_id: str = data.get("s", "")
    wide = bool(data.get("w"))
    if wide:  # each location from its own record; from the SKU's if that is not stored
        places = places or {}
        found = {loc: places.get(loc) for loc in places.get("") or ()}
        kept = {loc: value for loc, value in found.items() if value is not None}
        data = {**data, "l": {**data["l"], **kept}}
    level = bits
    if bits:
        present = {
            i: ours
            for i, part in enumerate(parts)
            if (ours := _of_split(part, split_id)) is not None
        }
        for part in present.values():
            level = max(level, part.get("n", bits))  # parts written before "n": the record's
        holder = _holders(data["sku"], present, level, bits)
        mask = (1 << level) - 1
        # the delta logs are the parts': a location's record written with its log (the
        # split's) may hold deltas the daily pruning has folded into a part since
        locations = {loc: _without_logs(value) for loc, value in data["l"].items()}
        data = {**data, "l": locations, **{name: {} for name in PART_FIELDS}}
        logs: dict[str, dict[str, list[int]]] = {}
        folds: dict[str, dict[int, list[int]]] = {}
        for index, part in present.items():
            for name in PART_FIELDS:  # parts written before "r" have none
                for key, value in part.get(name, {}).items():
                    if holder[_part_of(key, mask)] == index:
                        data[name][key] = value
            for key, entries in part.get("e", {}).items():  # nor, before "e" and "f", these
                for event_id, entry in entries.items():
                    if holder[_part_of(event_id, mask)] == index:
                        logs.setdefault(key, {})[event_id] = entry
            for key, fold in part.get("f", {}).items():
                folds.setdefault(key, {})[index] = fold
    state = SkuState.from_dict(data)
    state.part_bits = level
    state.split_id = split_id
    if bits:
        _join_logs(state, logs, folds)
        _drop_pruned(state)
    if bits or wide:
        recount(state)
    state.wide = wide
    return state


def _without_logs(location: dict[str, Any]) -> dict[str, Any]:
    """A location's record with its buckets' delta logs left out (but a bucket written before
    `base`, whose record kept its log while its parts held none)."""
    buckets = [[*b[:3], {}, *b[4:]] if len(b) > 4 else b for b in location["b"]]
    return {**location, "b": buckets}


def _holders(sku: str, present: Mapping[int, dict[str, Any]], level: int, bits: int) -> list[int]:
    """For each index of the layout of 2**level parts, the stored part that holds its entries:
    itself, or the nearest part it splits from (its index less its top bit, and so on) if that
    part is of a layout before the index existed."""
    holders: list[int] = []
    missing: list[int] = []
    for index in range(1 << level):
        at = index
        while True:
            part = present.get(at)
            if part is not None:
                if index & ((1 << part.get("n", bits)) - 1) == at:
                    holders.append(at)
                    break
                at = -1  # a part of a layout that gave the index's entries to a part not stored
            if at <= 0:
                missing.append(index)
                holders.append(-1)
                break
            at &= ~(1 << (at.bit_length() - 1))
    if missing:
        raise ValueError(
            f"SKU {sku}: its record has {1 << level} parts, {len(present)} given, missing {missing}"
        )
    return holders


def _join_logs(
    state: SkuState, logs: dict[str, dict[str, list[int]]], folds: dict[str, dict[int, list[int]]]
) -> None:
    """Each bucket's delta log and quantity from its count (in the record) and its parts: the
    deltas after the count, and the forgotten ones after it (whatever their parts' age)."""
    for key in (*logs, *folds):
        state.location(key[1:])  # a location the record does not know yet: its parts are newer
    for key, bucket in _buckets(state):
        count_at = to_us(bucket.count_at) if bucket.count_at is not None else -1
        for event_id, (at, delta) in logs.get(key, {}).items():
            if at > count_at:
                bucket.log[event_id] = (from_us(at), delta)
        alive = {i: fold for i, fold in folds.get(key, {}).items() if fold[0] > count_at}
        _keep_folds(state, key, alive)
        forgotten = sum(fold[1] for fold in alive.values())
        bucket.qty = bucket.base + forgotten + sum(delta for _, delta in bucket.log.values())


def _drop_pruned(state: SkuState) -> None:
    """What the record says the hourly pruning dropped, dropped from whatever part still holds
    it: a kill can store the record and not a part the pruning changed, and the redelivered
    events do not prune again within the hour (an orphan hold's units would stay reserved and
    move later holds to other locations). Nothing expiring before `orphans_before` is held or
    remembered after that pruning (a request that late is refused unheld and unremembered), so
    this drops only what the pruning did."""
    cutoff = state.orphans_before
    for rid in [rid for rid, hold in state.holds.items() if hold.expires_at < cutoff]:
        del state.holds[rid]
        state.note_id(rid)
    for ids in (state.closed, state.refused):
        for rid in [rid for rid, expires_at in ids.items() if expires_at < cutoff]:
            del ids[rid]
            state.note_id(rid)


def recount(state: SkuState) -> None:
    """Each location's `reserved` and `committed` from the holds and order lines themselves.

    A record in parts is stored as several Kafka records, each on its own: a kill between them
    can leave the record one write older or newer than a part. Every entry in a part is whole,
    and the events behind a change not stored everywhere are redelivered (offsets are committed
    only after every record is stored), so the joined state is right once its counts are what its
    entries hold."""
    for location in state.locations.values():
        location.reserved = 0
        location.committed = 0
    for hold in state.holds.values():
        for loc, units in hold.units.items():
            state.location(loc).reserved += units
    for line in state.commitments.values():
        for loc, units in line.open_at().items():
            state.location(loc).committed += units


def join_parts(data: dict[str, Any], part: Callable[[int | str], Any]) -> SkuState:
    """join_record, each record beside it looked up by its name (None: not found): the parts
    the record counts, and those of the next layout and any newer one found (see join_record)."""
    places: dict[str, Any] | None = None
    if data.get("w"):
        index = part("") or []
        places = {"": index, **{loc: part(loc) for loc in index}}
    return join_record(data, probe_parts(data, part), places)


def probe_parts(data: dict[str, Any], part: Callable[[int], Any]) -> list[Any]:
    """The parts of a SKU's record by index, None where none is stored: those the record counts,
    then those of the next layout, and of a newer layout a part found says (its "n")."""
    bits: int = data.get("b", 0)
    if not bits:
        return []
    split_id: str = data.get("s", "")
    found: list[Any] = []
    size = 1 << (bits + 1)
    while len(found) < size:
        stored = _of_split(part(len(found)), split_id)
        found.append(stored)
        if stored is not None:
            size = max(size, 1 << stored.get("n", bits))
    while found and found[-1] is None:
        found.pop()
    return found


def part_names(data: dict[str, Any], state: SkuState) -> list[int | str]:
    """The names of the records beside a SKU's changelog record `data`, joined as `state`."""
    names: list[int | str] = list(range(1 << state.part_bits if state.part_bits else 0))
    if data.get("w"):
        names += ["", *state.locations]
    return names


def part_key(key: bytes, name: int | str) -> bytes:
    """The key of the record `name` beside the SKU record under `key`: part `name` (an index),
    or of a wide SKU its location `name` ("": the index of them). A SKU id holds no NUL."""
    if isinstance(name, int):
        return key + b"\x00" + str(name).encode()
    return key + b"\x00@" + name.encode()


def part_of(name: bytes) -> tuple[bytes, int | str]:
    """The SKU key and the record name of a part key (part_key's inverse)."""
    key, _, tail = name.rpartition(b"\x00")
    return key, tail[1:].decode() if tail.startswith(b"@") else int(tail)
