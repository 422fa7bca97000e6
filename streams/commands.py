"""Bytes of the internal topics: business events stay Avro (via streams.codec), commands are JSON.

Internal records are written and read only by this project's own stages; a JSON object tagged with
its kind keeps them readable in `tail` and independent of the public Avro contracts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple, cast

import orjson

from streams.codec import Codec
from streams.core.derive import ComponentUpdate
from streams.core.models import Event, OrderLine
from streams.core.orders import Confirmation
from streams.core.reservations import ReservationDecided, ReservationState
from streams.core.retention import LinesForgotten
from streams.core.sku import (
    CancelLines,
    CommitLines,
    HoldRequirement,
    HoldResult,
    ReleaseHold,
    TryHold,
)
from streams.core.state import from_us, to_us
from streams.errors import EncodingError

INTERNAL_TOPIC = "inventory.internal"  # the topic name the codec sees for forwarded events

# An envelope: many internal records in one Kafka record, so that the framework's per-record cost
# (fetch, conductor, stream, ack: most of a worker's CPU per record) is paid once per partition and
# batch instead of once per command. Neither JSON ("{") nor Avro single-object ("\xc3\x01") nor the
# Confluent wire format ("\x00") starts with these bytes.
ENVELOPE = b"\xe5nv1"
_ITEM = struct.Struct(">BII")  # flags, key length, value length
COMMITTED_FLAG = 1  # an order the SKU stage has already committed in place


class Item(NamedTuple):
    """One internal record inside an envelope: what it would have been as a record of its own."""

    key: bytes
    value: bytes
    flags: int


def is_envelope(value: bytes | None) -> bool:
    return value is not None and value[:4] == ENVELOPE


def pack(items: Sequence[Item], limit: int) -> Iterator[bytes]:
    """Envelopes holding `items` in order, each at most about `limit` bytes (one item may exceed
    it: it then travels alone)."""
    parts: list[bytes] = [ENVELOPE]
    size = len(ENVELOPE)
    for key, value, flags in items:
        grown = _ITEM.size + len(key) + len(value)
        if size + grown > limit and len(parts) > 1:
            yield b"".join(parts)
            parts, size = [ENVELOPE], len(ENVELOPE)
        parts += (_ITEM.pack(flags, len(key), len(value)), key, value)
        size += grown
    if len(parts) > 1:
        yield b"".join(parts)


def unpack(value: bytes) -> Iterator[Item]:
    """The items of an envelope, in the order they were packed; EncodingError if it is cut short."""
    at, end = len(ENVELOPE), len(value)
    while at < end:
        if at + _ITEM.size > end:
            raise EncodingError(f"envelope cut short at byte {at} of {end}")
        flags, key_len, value_len = _ITEM.unpack_from(value, at)
        at += _ITEM.size
        stop = at + key_len + value_len
        if stop > end:
            raise EncodingError(f"envelope cut short at byte {at} of {end}")
        yield Item(value[at : at + key_len], value[at + key_len : stop], flags)
        at = stop


class CatalogChanged:
    """Tells one partition's stage to derive its outputs again under a new catalog version."""

    __slots__ = ("version",)

    def __init__(self, version: int) -> None:
        self.version = version


class DateChanged:
    """Tells one partition's stage that the clock's date is now `day` (backorder horizons)."""

    __slots__ = ("day",)

    def __init__(self, day: date) -> None:
        self.day = day


def date_changed(day: date) -> bytes:
    """The announcement a partition's SKU stage gets when the clock's date moves."""
    return orjson.dumps(_to_json(DateChanged(day)))


def catalog_changed(version: int) -> bytes:
    """The announcement a partition's SKU stage gets when catalog `version` is published."""
    return orjson.dumps(_to_json(CatalogChanged(version)))


Command = (
    Event
    | CommitLines
    | CancelLines
    | TryHold
    | ReleaseHold
    | HoldResult
    | ComponentUpdate
    | Confirmation
    | CatalogChanged
    | DateChanged
    | ReservationDecided
    | LinesForgotten
)


def _ts(value: datetime) -> int:
    return to_us(value)


def _dt(value: int) -> datetime:
    return from_us(value)


def _day(value: date | None) -> int | None:
    return value.toordinal() if value else None


def _undate(value: int | None) -> date | None:
    return date.fromordinal(value) if value is not None else None


# ---- the command kinds: each one's JSON both ways, and its tag in _KINDS ----------------------
# A kind's to-JSON takes the tag, which every internal record carries first, as "t".


def _commit_json(t: str, cmd: CommitLines) -> dict[str, Any]:
    return {
        "t": t,
        "e": cmd.event_id,
        "at": _ts(cmd.occurred_at),
        "sku": cmd.sku,
        "o": cmd.order_id,
        "ch": cmd.channel,
        "r": cmd.reservation_id,
        "l": [[x.line_id, x.sku, x.quantity, x.location] for x in cmd.lines],
    }


def _commit(d: dict[str, Any]) -> CommitLines:
    lines = tuple(OrderLine(line_id=a, sku=b, quantity=c, location=e) for a, b, c, e in d["l"])
    return CommitLines(d["e"], _dt(d["at"]), d["sku"], d["o"], d["ch"], d["r"], lines)


def _cancel_json(t: str, cmd: CancelLines) -> dict[str, Any]:
    return {
        "t": t,
        "e": cmd.event_id,
        "at": _ts(cmd.occurred_at),
        "sku": cmd.sku,
        "o": cmd.order_id,
        "l": [list(x) for x in cmd.lines],
    }


def _cancel(d: dict[str, Any]) -> CancelLines:
    return CancelLines(d["e"], _dt(d["at"]), d["sku"], d["o"], tuple((a, b) for a, b in d["l"]))


def _hold_json(t: str, cmd: TryHold) -> dict[str, Any]:
    return {
        "t": t,
        "e": cmd.event_id,
        "at": _ts(cmd.occurred_at),
        "sku": cmd.sku,
        "r": cmd.reservation_id,
        "ch": cmd.channel,
        "x": _ts(cmd.expires_at),
        "q": [[q.line, q.units, q.per_unit, q.location] for q in cmd.requirements],
    }


def _hold(d: dict[str, Any]) -> TryHold:
    reqs = tuple(HoldRequirement(a, b, c, e) for a, b, c, e in d["q"])
    return TryHold(d["e"], _dt(d["at"]), d["sku"], d["r"], d["ch"], _dt(d["x"]), reqs)


def _release_json(t: str, cmd: ReleaseHold) -> dict[str, Any]:
    return {
        "t": t,
        "e": cmd.event_id,
        "at": _ts(cmd.occurred_at),
        "sku": cmd.sku,
        "r": cmd.reservation_id,
        "why": cmd.reason,
    }


def _release(d: dict[str, Any]) -> ReleaseHold:
    return ReleaseHold(d["e"], _dt(d["at"]), d["sku"], d["r"], d["why"])


def _result_json(t: str, cmd: HoldResult) -> dict[str, Any]:
    return {
        "t": t,
        "r": cmd.reservation_id,
        "sku": cmd.sku,
        "ok": cmd.ok,
        "h": [list(x) for x in cmd.held],
        "s": [list(x) for x in cmd.short],
        "n": [cmd.requested, cmd.available],
    }


def _result(d: dict[str, Any]) -> HoldResult:
    return HoldResult(
        d["r"],
        d["sku"],
        d["ok"],
        tuple((a, b) for a, b in d["h"]),
        tuple((a, b) for a, b in d["s"]),
        *d.get("n", (0, 0)),
    )


def _component_json(t: str, cmd: ComponentUpdate) -> dict[str, Any]:
    return {
        "t": t,
        "ch": cmd.channel,
        "cs": cmd.channel_sku,
        "sku": cmd.sku,
        "n": cmd.seq,
        "a": cmd.channel_ats,
        "b": cmd.backorder_units,
        "d": _day(cmd.backorder_eta),
        "at": _ts(cmd.as_of),
        "c": cmd.cause_event_id,
        "cv": cmd.catalog_version,
    }


def _component(d: dict[str, Any]) -> ComponentUpdate:
    return ComponentUpdate(
        d["ch"],
        d["cs"],
        d["sku"],
        d["n"],
        d["a"],
        d["b"],
        _undate(d["d"]),
        _dt(d["at"]),
        d["c"],
        d.get("cv", 0),
    )


def _confirm_json(t: str, cmd: Confirmation) -> dict[str, Any]:
    return {
        "t": t,
        "r": cmd.reservation_id,
        "o": cmd.order_id,
        "e": cmd.event_id,
        "k": list(cmd.skus),
    }


def _confirm(d: dict[str, Any]) -> Confirmation:
    return Confirmation(d["r"], d["o"], d["e"], tuple(d.get("k", ())))


def _catalog_json(t: str, cmd: CatalogChanged) -> dict[str, Any]:
    return {"t": t, "v": cmd.version}


def _catalog(d: dict[str, Any]) -> CatalogChanged:
    return CatalogChanged(d["v"])


def _date_json(t: str, cmd: DateChanged) -> dict[str, Any]:
    return {"t": t, "d": cmd.day.toordinal()}


def _date(d: dict[str, Any]) -> DateChanged:
    return DateChanged(date.fromordinal(d["d"]))


def _decided_json(t: str, cmd: ReservationDecided) -> dict[str, Any]:
    return {"t": t, "s": cmd.state.to_dict()}


def _decided(d: dict[str, Any]) -> ReservationDecided:
    return ReservationDecided(ReservationState.from_dict(d["s"]))


def _forgotten_json(t: str, cmd: LinesForgotten) -> dict[str, Any]:
    return {"t": t, "o": cmd.order_id, "sku": cmd.sku, "l": list(cmd.line_ids)}


def _forgotten(d: dict[str, Any]) -> LinesForgotten:
    return LinesForgotten(d["o"], d["sku"], tuple(d["l"]))


# The one registry of internal commands: type -> (tag, to JSON, from JSON). Everything else on an
# internal topic is an event, in Avro.
_KINDS: dict[type, tuple[str, Callable[[str, Any], dict[str, Any]], Callable[..., Command]]] = {
    CommitLines: ("commit", _commit_json, _commit),
    CancelLines: ("cancel", _cancel_json, _cancel),
    TryHold: ("hold", _hold_json, _hold),
    ReleaseHold: ("release", _release_json, _release),
    HoldResult: ("result", _result_json, _result),
    ComponentUpdate: ("component", _component_json, _component),
    Confirmation: ("confirm", _confirm_json, _confirm),
    CatalogChanged: ("catalog", _catalog_json, _catalog),
    DateChanged: ("date", _date_json, _date),
    ReservationDecided: ("decided", _decided_json, _decided),
    LinesForgotten: ("forgotten", _forgotten_json, _forgotten),
}
_BY_TAG = {tag: from_json for tag, _, from_json in _KINDS.values()}


def _to_json(cmd: Any) -> dict[str, Any]:
    kind = _KINDS.get(type(cmd))
    if kind is None:
        raise EncodingError(f"no internal encoding for {type(cmd).__name__}")
    tag, to_json, _ = kind
    return to_json(tag, cmd)


def _from_json(d: dict[str, Any]) -> Command:
    tag = d["t"]
    from_json = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if from_json is None:
        raise EncodingError(f"unknown internal record kind {tag!r}")
    return from_json(d)


class CommandCodec:
    """Serializer pair for internal topics: events as Avro single objects, commands as JSON."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def encode(self, cmd: Command) -> bytes:
        kind = _KINDS.get(type(cmd))
        if kind is not None:
            tag, to_json, _ = kind
            return orjson.dumps(to_json(tag, cmd))
        return self.codec.encode(cast(Event, cmd), INTERNAL_TOPIC)  # not a command kind: an event

    def decode(self, data: bytes | None) -> Command:
        if data is None:
            raise EncodingError("empty record (a tombstone) on an internal topic")
        if data[:1] == b"{":
            try:
                return _from_json(orjson.loads(data))
            except (ValueError, KeyError, TypeError) as error:
                raise EncodingError(f"malformed internal record: {error}") from None
        decoded = self.codec.decode(data, INTERNAL_TOPIC)
        return decoded  # type: ignore[return-value]
