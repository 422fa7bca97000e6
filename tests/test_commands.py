"""Internal records round-trip, and a reservation decided where its SKU lives reaches its record."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.codec import make_codec
from streams.commands import (
    CatalogChanged,
    CommandCodec,
    Item,
    ReservationDecided,
    catalog_changed,
    is_envelope,
    pack,
    unpack,
)
from streams.core.keys import event_key
from streams.core.models import OrderCancelled, OrderCreated, ReservationRequested
from streams.core.reservations import (
    EXPIRED,
    HELD,
    REJECTED,
    RELEASED,
    closed_before_requested,
    on_decided,
    on_result,
    start,
)
from streams.core.retention import LinesForgotten
from streams.core.sku import HoldResult
from streams.errors import EncodingError
from streams.settings import Settings
from streams.tools import decode_record
from tests.core.builders import T0, catalog, ev


def request(rid: str = "r1", minute: float = 0, **line: object) -> ReservationRequested:
    event = ev(
        "reservation-requested",
        minute,
        event_id=f"api:{rid}",
        reservation_id=rid,
        channel="web",
        lines=[line or {"sku": "A", "quantity": 2}],
    )
    assert isinstance(event, ReservationRequested)
    return event


def decided(event: ReservationRequested, ok: bool = True):  # type: ignore[no-untyped-def]
    state, (hold,) = start(event, catalog())
    result = (
        HoldResult(hold.reservation_id, hold.sku, True, (("wh", 2),))
        if ok
        else HoldResult(hold.reservation_id, hold.sku, False, short=((0, 1),))
    )
    on_result(state, result)
    return state


def test_internal_commands_round_trip() -> None:
    codec = CommandCodec(make_codec(Settings(kafka_bootstrap_servers=None)))
    state = decided(request())
    back = codec.decode(codec.encode(ReservationDecided(state)))
    assert isinstance(back, ReservationDecided)
    assert back.state.to_dict() == state.to_dict() and back.state.status == HELD
    catalog_back = codec.decode(codec.encode(CatalogChanged(7)))
    assert isinstance(catalog_back, CatalogChanged) and catalog_back.version == 7
    forgotten = LinesForgotten("gid://o/1", "A", ("gid://l/1", "2"))
    assert codec.decode(codec.encode(forgotten)) == forgotten


def test_a_first_decision_becomes_the_record_and_a_redelivery_changes_nothing() -> None:
    state = decided(request())
    kept, releases = on_decided(None, state)
    assert kept is state and releases == []
    again, releases = on_decided(kept, decided(request()))
    assert again is kept and releases == []
    refused = decided(request("r2"), ok=False)
    assert on_decided(None, refused) == (refused, []) and refused.status == REJECTED


def test_a_hold_for_a_reservation_already_closed_is_given_back() -> None:
    released = closed_before_requested(
        ev("reservation-released", 0, reservation_id="r1")  # type: ignore[arg-type]
    )
    kept, releases = on_decided(released, decided(request(minute=1)))
    assert kept is released and kept.status == RELEASED
    assert [(r.sku, r.reservation_id, r.reason) for r in releases] == [("A", "r1", RELEASED)]
    # an id reused after the SKU forgot it: the record's status stands, the new hold goes back
    expired = decided(request())
    expired.status = EXPIRED
    kept, releases = on_decided(expired, decided(request(minute=90)))
    assert kept is expired and [r.reason for r in releases] == [EXPIRED]
    assert releases[0].occurred_at == T0 + timedelta(minutes=90)


def test_events_are_keyed_by_their_first_sku_as_spec_5_says() -> None:
    order = ev(
        "order-created",
        0,
        order_id="o1",
        channel="web",
        lines=[
            {"line_id": "1", "sku": "B", "quantity": 1},
            {"line_id": "2", "sku": "A", "quantity": 1},
        ],
    )
    assert isinstance(order, OrderCreated) and event_key(order) == "B"
    cancel = ev("order-cancelled", 0, order_id="o1")
    assert isinstance(cancel, OrderCancelled) and event_key(cancel) == "o1"
    assert event_key(request()) == "A"
    by_listing = request(channel_sku="KIT", quantity=1)
    assert event_key(by_listing) == "r1"  # no catalog to resolve the listing with
    assert event_key(by_listing, catalog()) == "A"  # KIT's first component
    assert event_key(request(channel_sku="nope", quantity=1), catalog()) == "r1"


# ---- envelopes: a batch's commands for one partition in one record ----

items = st.lists(
    st.builds(Item, st.binary(max_size=40), st.binary(max_size=300), st.integers(0, 255)),
    max_size=60,
)


@given(items, st.integers(64, 2_000))
def test_envelopes_give_back_every_item_in_order_whatever_the_size_limit(
    sent: list[Item], limit: int
) -> None:
    envelopes = list(pack(sent, limit))
    assert all(is_envelope(e) for e in envelopes)
    assert [item for e in envelopes for item in unpack(e)] == sent
    # split where the limit says, except an item larger than the limit, which travels alone
    assert all(len(e) <= limit or len(list(unpack(e))) == 1 for e in envelopes)


def test_no_command_or_event_encoding_is_mistaken_for_an_envelope() -> None:
    codec = CommandCodec(make_codec(Settings(kafka_bootstrap_servers=None)))
    event = request()
    for record in (codec.encode(event), codec.encode(CatalogChanged(3)), catalog_changed(1)):
        assert not is_envelope(record)
    assert not is_envelope(None)


def test_an_envelope_cut_short_is_an_encoding_error_not_a_half_batch() -> None:
    (envelope,) = pack([Item(b"A", b"x" * 50, 0), Item(b"B", b"y" * 50, 1)], 10_000)
    with pytest.raises(EncodingError, match="cut short"):
        list(unpack(envelope[:-10]))


def test_tail_shows_an_envelope_as_the_records_it_carries() -> None:
    codec = make_codec(Settings(kafka_bootstrap_servers=None))
    commands = CommandCodec(codec)
    envelope = b"".join(
        pack([Item(b"r1", commands.encode(request()), 0), Item(b"x", catalog_changed(4), 0)], 10**6)
    )
    shown = decode_record("inventory.commands", envelope, codec, commands)
    assert [entry["key"] for entry in shown["envelope"]] == ["r1", "x"]
    assert shown["envelope"][0]["value"]["reservation_id"] == "r1"
    assert shown["envelope"][1]["value"] == {"t": "catalog", "v": 4}
