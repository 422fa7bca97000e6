"""Routing a record of inventory.events: dead-lettered, applied on the partition it arrived on,
or forwarded to the stage whose table holds its key. Pure: the same record, catalog, decision
time and partition give the same route, live and on a replay.

A record is first admitted (decoded, of an event's kind, against the catalog: `admit`), then
routed (`route`); the runner observes the event's time on its clock in between, as the decision
time of a request routed after it counts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from streams.core.catalog import Catalog
from streams.core.check import check_event
from streams.core.models import (
    EVENT_TYPES,
    Event,
    OrderCancelled,
    OrderCreated,
    ReservationRequested,
    SingleSkuEvent,
)
from streams.core.reservations import ReservationState
from streams.core.sku import TryHold
from streams.errors import EncodingError, InvalidEvent
from streams.stages.effects import DeadLetter
from streams.stages.skus import request_here

EVENT_CLASSES = tuple(EVENT_TYPES.values())


@dataclass(frozen=True, slots=True)
class LocalRequest:
    """A reservation request the SKU stage decides itself (every line is one local SKU)."""

    state: ReservationState
    hold: TryHold
    original: bytes  # the event as received, for the reservation stage if this SKU knows the id


@dataclass(frozen=True, slots=True)
class Forward:
    """To a stage through inventory.commands: keyed by its table's key, the record as received."""

    key: bytes
    value: bytes


def decode_event(value: bytes | None, decode: Callable[[bytes], object], topic: str) -> Event:
    """A SPEC §2 event, or EncodingError for a tombstone or a record of another kind."""
    if value is None:
        raise EncodingError(f"empty record (a tombstone): {topic} carries events only")
    decoded = decode(value)
    if not isinstance(decoded, EVENT_CLASSES):
        raise EncodingError(
            f"a {type(decoded).__name__} record does not belong on {topic}: events only"
        )
    return cast(Event, decoded)


def admit(
    value: bytes | None, decode: Callable[[bytes], object], catalog: Catalog, topic: str
) -> Event | DeadLetter:
    """The record's event (`decode` may raise EncodingError or InvalidEvent), or why it is a dead
    letter: undecodable, not an event, or naming what the catalog does not have (check_event)."""
    try:
        ev = decode_event(value, decode, topic)
    except (EncodingError, InvalidEvent) as error:
        return DeadLetter(getattr(error, "reason", str(error)))
    reason = check_event(ev, catalog)
    if reason is not None:
        return DeadLetter(reason, getattr(ev, "source", "unknown"))
    return ev


def route(
    ev: Event,
    original: bytes,
    catalog: Catalog,
    decision_time: Callable[[], datetime],
    lives_here: Callable[[bytes], bool],
) -> Event | LocalRequest | Forward:
    """Keep an admitted event here if its SKU lives here (`lives_here`: the key's partition is
    the record's), else forward it: what the SKU stage applies here (the event, or a request it
    decides: LocalRequest), or where it goes (Forward, with `original`, the record's bytes)."""
    if isinstance(ev, SingleSkuEvent):
        key = ev.sku.encode()
        if lives_here(key):
            return ev
        return Forward(key, original)
    if isinstance(ev, OrderCreated) and all(lives_here(line.sku.encode()) for line in ev.lines):
        return ev  # every line's SKU lives here: committed in place (commit_here)
    if isinstance(ev, OrderCreated | OrderCancelled):
        return Forward(ev.order_id.encode(), original)
    if isinstance(ev, ReservationRequested):
        local = local_request(ev, original, catalog, decision_time(), lives_here)
        if local is not None:
            return local
    return Forward(ev.reservation_id.encode(), original)


def local_request(
    ev: ReservationRequested,
    original: bytes,
    catalog: Catalog,
    now: datetime,
    lives_here: Callable[[bytes], bool],
) -> LocalRequest | None:
    """A request whose every line is one SKU that lives on this partition: decided here."""
    here = request_here(ev, catalog, now, lambda sku: lives_here(sku.encode()))
    return None if here is None else LocalRequest(here[0], here[1], original)
