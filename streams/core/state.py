"""Per-SKU state: quantities, reservation table and dedupe/ordering memory all live in ONE record.

Idempotence is structural and lives in the same record as the quantities it protects: a delta's id
in its bucket's delta log, a pick's or cancel's id in its order line, a schedule's or receipt's id
in its PO, a hold under its reservation id. So at-least-once delivery may apply a record twice
without counting it twice, and the record grows with open business, not with traffic.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUCKETS = ("sellable", "damaged", "quarantine")


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
    # a redelivered delta recognisable
    log: dict[str, tuple[datetime, int]] = field(default_factory=dict)

    def to_dict(self) -> list[Any]:
        at = to_us(self.count_at) if self.count_at else None
        return [self.qty, at, self.count_id, {k: [to_us(t), d] for k, (t, d) in self.log.items()}]

    @classmethod
    def from_dict(cls, data: list[Any]) -> Bucket:
        qty, at, cid, log = data
        return cls(
            qty,
            from_us(at) if at is not None else None,
            cid,
            {k: (from_us(t), d) for k, (t, d) in log.items()},
        )


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "b": [self.sellable.to_dict(), self.damaged.to_dict(), self.quarantine.to_dict()],
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
    catalog_version: int = 0  # the catalog its published values were last derived under
    # how its changelog record is split (split_record): 2**part_bits parts, 0 = one record; only
    # grows, so a part once written is always read back
    part_bits: int = field(default=0, compare=False)
    # keys of the order lines made or changed since SplitCache last split this state (the stage
    # notes each; never in the record): a hot SKU's write encodes those, not all its lines
    lines_changed: set[str] = field(default_factory=set, compare=False)

    def location(self, loc: str) -> LocationState:
        state = self.locations.get(loc)
        if state is None:
            state = self.locations[loc] = LocationState()
        return state

    def to_dict(self) -> dict[str, Any]:
        data = self.head_dict()
        data["h"] = {k: v.to_dict() for k, v in self.holds.items()}
        data["c"] = {k: v.to_dict() for k, v in self.commitments.items()}
        data["x"] = {k: to_us(v) for k, v in self.closed.items()}
        data["r"] = {k: to_us(v) for k, v in self.refused.items()}
        return data

    def head_dict(self) -> dict[str, Any]:
        """to_dict without the order lines, holds, closed and refused ids (a hot SKU's parts hold
        them)."""
        return {
            "sku": self.sku,
            "l": {k: v.to_dict() for k, v in self.locations.items()},
            "h": {},
            "c": {},
            "x": {},
            "r": {},
            "p": {k: v.to_dict() for k, v in self.published.items()},
            "t": to_us(self.time),
            "d": self.pruned_day,
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
            catalog_version=data.get("v", 0),
        )


# ---- a hot SKU's record, in parts ---------------------------------------------------------------

# Open business lives in the SKU's record, and a hot SKU (a launch: tens of thousands of open
# order lines, or holds) outgrows a Kafka record (1 MB by default; the worker used to die on
# MSG_SIZE_TOO_LARGE at ~17,000 open lines, and again after every restart). Past PART_ENTRIES
# entries, its order lines, holds and closed and refused reservation ids go to 2**bits part
# records, each entry by the CRC-32 of its key; the SKU's own record keeps the rest and the number
# of parts.
PART_ENTRIES = 512  # ~27 KB of order lines per part
PART_FIELDS = ("c", "h", "x", "r")  # order lines, holds, closed ids, refused ids


def _part_bits(state: SkuState) -> int:
    """How many parts (2**bits) the SKU's record needs now: never fewer than it had."""
    entries = len(state.commitments) + len(state.holds) + len(state.closed) + len(state.refused)
    bits = state.part_bits
    while (entries >> bits) > PART_ENTRIES:
        bits += 1
    return bits


def _empty_part() -> dict[str, Any]:
    return {name: {} for name in PART_FIELDS}


def split_record(state: SkuState) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The SKU's changelog record and its parts (none until it holds more than PART_ENTRIES
    order lines, holds, closed and refused ids)."""
    data = state.to_dict()
    bits = _part_bits(state)
    if bits == 0:
        return data, []
    state.part_bits = bits
    mask = (1 << bits) - 1
    parts = [_empty_part() for _ in range(mask + 1)]
    for name in PART_FIELDS:
        for key, value in data[name].items():
            parts[zlib.crc32(key.encode()) & mask][name][key] = value
        data[name] = {}
    data["b"] = bits
    return data, parts


class SplitCache:
    """split_record for one SKU, kept between its writes, so a write encodes only the entries and
    parts that changed since the last one: a hot SKU's whole record took ~5 ms to split at 2,699
    holds and 4,801 closed ids, and the worker writes it before each round of reservation decisions.

    A hold and a closed id are never changed in place (a new object each time), so one whose
    object is the one seen last time is encoded as it was. An order line is changed in place: of
    the state object split last time, the lines in its `lines_changed` are encoded again; of
    another object (recovered, or first seen), every line is encoded and compared."""

    def __init__(self) -> None:
        self.bits = 0
        self.parts: list[dict[str, Any]] = []  # the parts, encoded, as last split
        self.holds: dict[str, Hold] = {}  # the holds and closed ids seen last time
        self.closed: dict[str, datetime] = {}
        self.refused: dict[str, datetime] = {}
        self.lines: dict[str, int] = {}  # order line key -> its part
        self.state: SkuState | None = None  # the state object split last time

    def split(self, state: SkuState) -> tuple[dict[str, Any], list[int]]:
        """split_record's record, and the indexes of the parts (in `parts`) that changed since
        the last split; every part after the number of parts grew (or at the first split)."""
        bits = _part_bits(state)
        if bits == 0:
            self._reset(0)
            state.lines_changed.clear()
            return state.to_dict(), []
        state.part_bits = bits
        changed: set[int] = set()
        if bits != self.bits:
            self._reset(bits)
            changed.update(range(1 << bits))
        mask = (1 << bits) - 1
        parts = self.parts

        self.holds = _track(self.holds, state.holds, parts, "h", mask, changed, _hold_json)
        self.closed = _track(self.closed, state.closed, parts, "x", mask, changed, to_us)
        self.refused = _track(self.refused, state.refused, parts, "r", mask, changed, to_us)

        lines = self.lines
        commitments = state.commitments
        keys = state.lines_changed if state is self.state else commitments
        for key in keys:
            line = commitments.get(key)
            if line is None:
                continue  # made and forgotten since: gone below
            found = lines.get(key)
            index = zlib.crc32(key.encode()) & mask if found is None else found
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

        record = state.head_dict()
        record["b"] = bits
        return record, sorted(changed)

    def _reset(self, bits: int) -> None:
        self.bits = bits
        self.parts = [_empty_part() for _ in range(1 << bits)] if bits else []
        self.holds = {}
        self.closed = {}
        self.refused = {}
        self.lines = {}
        self.state = None


def _hold_json(hold: Hold) -> list[Any]:
    return hold.to_dict()


def _track(
    seen: dict[str, Any],
    now: dict[str, Any],
    parts: list[dict[str, Any]],
    name: str,
    mask: int,
    changed: set[int],
    encode: Callable[[Any], Any],
) -> dict[str, Any]:
    """SplitCache.split for entries never changed in place (holds, closed and refused ids):
    encode into their parts those whose object is not the one `seen` last time, drop the gone
    ones, note the parts touched; returns what to remember as seen."""
    new_keys = 0
    for key, value in now.items():
        before = seen.get(key)
        if before is not value:
            if before is None:
                new_keys += 1
            index = zlib.crc32(key.encode()) & mask
            parts[index][name][key] = encode(value)
            changed.add(index)
    if len(seen) + new_keys != len(now):  # some are gone
        for key in seen:
            if key not in now:
                index = zlib.crc32(key.encode()) & mask
                del parts[index][name][key]
                changed.add(index)
    return dict(now)


def part_count(data: dict[str, Any]) -> int:
    """How many parts a SKU's changelog record has (0: it is whole)."""
    bits: int = data.get("b", 0)
    return 1 << bits if bits else 0


def join_record(data: dict[str, Any], parts: Sequence[dict[str, Any] | None]) -> SkuState:
    """The SKU's state from its changelog record and its parts (split_record's inverse)."""
    bits: int = data.get("b", 0)
    if bits:
        if len(parts) != 1 << bits or any(part is None for part in parts):
            missing = [i for i, part in enumerate(parts) if part is None]
            raise ValueError(
                f"SKU {data['sku']}: its record has {1 << bits} parts, "
                f"{len(parts)} given, missing {missing}"
            )
        data = {**data, **_empty_part()}
        for part in parts:
            assert part is not None
            for name in PART_FIELDS:
                data[name].update(part.get(name, {}))  # parts written before "r" have none
    state = SkuState.from_dict(data)
    state.part_bits = bits
    if bits:
        recount(state)
    return state


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


def join_parts(data: dict[str, Any], part: Callable[[int], dict[str, Any] | None]) -> SkuState:
    """join_record, each part looked up by its index (None: not found)."""
    return join_record(data, [part(i) for i in range(part_count(data))])


def part_key(key: bytes, index: int) -> bytes:
    """The key of part `index` of the SKU record under `key` (a SKU id holds no NUL)."""
    return key + b"\x00" + str(index).encode()


def part_of(name: bytes) -> tuple[bytes, int]:
    """The SKU key and part index of a part key."""
    key, _, index = name.rpartition(b"\x00")
    return key, int(index)
