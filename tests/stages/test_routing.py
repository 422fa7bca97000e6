"""Routing a record of inventory.events on its own: dead-lettered with a reason a person reads,
applied on the partition it arrived on, or forwarded as received to the stage owning its key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from streams.core.models import Event
from streams.core.reservations import PENDING
from streams.core.sku import HoldResult
from streams.errors import EncodingError, InvalidEvent
from streams.stages.effects import DeadLetter
from streams.stages.routing import Forward, LocalRequest, admit, route
from tests.core.builders import T0, catalog, delta, ev

CATALOG = catalog()
TOPIC = "inventory.events"
ORIGINAL = b"the record as received"


def decoding(record: object) -> Any:
    """A codec whose every record reads as `record`."""
    return lambda _value: record


def failing(error: Exception) -> Any:
    def decode(_value: bytes) -> object:
        raise error

    return decode


def living(*skus: str) -> Any:
    """The partition where `skus` live, and no other SKU."""
    here = {sku.encode() for sku in skus}
    return lambda key: key in here


def where(event: Event, *skus: str, now: datetime = T0) -> Any:
    return route(event, ORIGINAL, CATALOG, lambda: now, living(*skus))


def order(skus: str, order_id: str = "o", **fields: Any) -> Event:
    lines = [{"line_id": str(i), "sku": sku, "quantity": 1} for i, sku in enumerate(skus)]
    return ev("order-created", 0, order_id=order_id, channel="web", lines=lines, **fields)


def request(skus: str, rid: str = "r", **fields: Any) -> Event:
    lines = [{"sku": sku, "quantity": 1} for sku in skus]
    return ev("reservation-requested", 0, reservation_id=rid, channel="web", lines=lines, **fields)


# ---- admit: what is not an event the catalog knows is a dead letter ----


def test_a_tombstone_is_a_dead_letter() -> None:
    dead = admit(None, decoding(delta("A", "wh", 1)), CATALOG, TOPIC)
    assert dead == DeadLetter(
        "empty record (a tombstone): inventory.events carries events only", "unknown"
    )


def test_a_record_of_another_kind_is_a_dead_letter() -> None:
    answer = HoldResult("r", "A", True, (("wh", 1),))
    dead = admit(b"x", decoding(answer), CATALOG, TOPIC)
    assert dead == DeadLetter(
        "a HoldResult record does not belong on inventory.events: events only"
    )


def test_an_undecodable_record_is_a_dead_letter_with_the_codec_s_reason() -> None:
    assert admit(b"x", failing(EncodingError("truncated")), CATALOG, TOPIC) == DeadLetter(
        "truncated"
    )
    assert admit(b"x", failing(InvalidEvent("no sku")), CATALOG, TOPIC) == DeadLetter("no sku")


def test_an_event_the_catalog_does_not_know_is_a_dead_letter_from_its_source() -> None:
    unknown = delta("A", "moon", 1)
    dead = admit(b"x", decoding(unknown), CATALOG, TOPIC)
    assert isinstance(dead, DeadLetter)
    assert "unknown location 'moon'" in dead.reason and dead.source == "test"


def test_an_event_the_catalog_knows_is_admitted_as_decoded() -> None:
    event = delta("A", "wh", 1)
    assert admit(b"x", decoding(event), CATALOG, TOPIC) is event


# ---- route: applied here, or forwarded by its stage's key ----


def test_a_single_sku_event_is_applied_where_its_sku_lives_else_forwarded_by_sku() -> None:
    event = delta("A", "wh", 1)
    assert where(event, "A") is event
    assert where(event, "B") == Forward(b"A", ORIGINAL)


def test_an_order_is_committed_here_only_when_every_line_s_sku_lives_here() -> None:
    both = order("AB")
    assert where(both, "A", "B") is both
    assert where(both, "A") == Forward(b"o", ORIGINAL)  # spans partitions: the order stage
    assert where(both) == Forward(b"o", ORIGINAL)


def test_a_cancel_goes_to_its_order() -> None:
    cancel = ev("order-cancelled", 0, order_id="o")
    assert where(cancel, "A") == Forward(b"o", ORIGINAL)


def test_a_single_sku_request_that_lives_here_is_decided_here() -> None:
    local = where(request("A"), "A")
    assert isinstance(local, LocalRequest)
    assert local.original == ORIGINAL
    assert local.hold.sku == "A" and local.hold.reservation_id == "r"
    assert local.state.reservation_id == "r" and local.state.status == PENDING


@pytest.mark.parametrize(
    ("event", "skus"),
    [
        (request("A"), ""),  # its SKU lives elsewhere
        (request("AB"), "AB"),  # two SKUs: the reservation stage gathers their answers
        (request("A", ttl_seconds=60), "A"),  # expired at the decision time: nothing to hold
    ],
    ids=["elsewhere", "multi-sku", "expired"],
)
def test_other_requests_go_to_the_reservation_stage(event: Event, skus: str) -> None:
    assert where(event, *skus, now=T0 + timedelta(minutes=2)) == Forward(b"r", ORIGINAL)


def test_an_invalid_request_goes_to_the_reservation_stage_which_dead_letters_it() -> None:
    invalid = ev(
        "reservation-requested",
        0,
        reservation_id="r",
        channel="web",
        lines=[{"channel_sku": "NOPE", "quantity": 1}],
    )
    assert where(invalid, "A", "NOPE") == Forward(b"r", ORIGINAL)


@pytest.mark.parametrize("kind", ["reservation-released", "reservation-expired"])
def test_releases_and_expiries_go_to_their_reservation(kind: str) -> None:
    assert where(ev(kind, 0, reservation_id="r"), "A") == Forward(b"r", ORIGINAL)


def test_the_decision_time_is_read_for_requests_only() -> None:
    reads: list[int] = []

    def now() -> datetime:
        reads.append(1)
        return T0

    route(delta("A", "wh", 1), ORIGINAL, CATALOG, now, living("A"))
    route(order("AB"), ORIGINAL, CATALOG, now, living())
    assert reads == []
    route(request("A"), ORIGINAL, CATALOG, now, living("A"))
    assert reads == [1]
