"""Core invariants on generated streams (hypothesis): duplicates, order, snapshots, oversell."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.formulas import sku_location_ats
from streams.core.models import Event
from streams.core.state import EPOCH, from_us, to_us
from streams.runners.local import Collector, Engine
from tests.core.builders import T0, catalog, count, delta, ev

CATALOG = catalog()
SKUS = ["A", "B"]
LOCS = ["wh", "store"]

sku_st = st.sampled_from(SKUS)
loc_st = st.sampled_from(LOCS)
minute_st = st.integers(min_value=0, max_value=600)
qty_st = st.integers(min_value=1, max_value=20)


@st.composite
def delta_event(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["adjust", "pick", "return"]))
    sku, loc, minute, qty = draw(sku_st), draw(loc_st), draw(minute_st), draw(qty_st)
    if kind == "adjust":
        sign = draw(st.sampled_from([1, -1]))
        bucket = draw(st.sampled_from(["sellable", "damaged", "quarantine"]))
        return delta(sku, loc, sign * qty, minute, bucket=bucket)
    if kind == "pick":
        return ev("pick-confirmed", minute, sku=sku, location=loc, quantity=qty)
    disposition = draw(st.sampled_from(["resellable", "damaged", "quarantine"]))
    return ev(
        "return-received", minute, sku=sku, location=loc, quantity=qty, disposition=disposition
    )


@st.composite
def any_event(draw: st.DrawFn, order_ids: list[str], reservation_ids: list[str]) -> Event:
    kind = draw(
        st.sampled_from(
            [
                "delta",
                "delta",
                "count",
                "order",
                "cancel",
                "pick-line",
                "reserve",
                "release",
                "inbound",
            ]
        )
    )
    minute = draw(minute_st)
    if kind == "delta":
        return draw(delta_event())
    if kind == "count":
        return count(draw(sku_st), draw(loc_st), draw(st.integers(0, 50)), minute)
    if kind == "order":
        oid = draw(st.sampled_from(order_ids))
        skus = draw(st.lists(sku_st, min_size=1, max_size=2, unique=True))
        res = draw(st.sampled_from([None, *reservation_ids]))
        return ev(
            "order-created",
            minute,
            order_id=oid,
            channel=draw(st.sampled_from(["web", "amz"])),
            reservation_id=res,
            lines=[
                {"line_id": str(i), "sku": s, "quantity": draw(qty_st)} for i, s in enumerate(skus)
            ],
        )
    if kind == "cancel":
        return ev("order-cancelled", minute, order_id=draw(st.sampled_from(order_ids)))
    if kind == "pick-line":
        return ev(
            "pick-confirmed",
            minute,
            order_id=draw(st.sampled_from(order_ids)),
            line_id="0",
            sku=draw(sku_st),
            location=draw(loc_st),
            quantity=draw(qty_st),
        )
    if kind == "reserve":
        return ev(
            "reservation-requested",
            minute,
            reservation_id=draw(st.sampled_from(reservation_ids)),
            channel=draw(st.sampled_from(["web", "amz"])),
            ttl_seconds=draw(st.integers(60, 3600)),
            lines=[{"sku": draw(sku_st), "quantity": draw(qty_st)}],
        )
    if kind == "release":
        return ev(
            "reservation-released", minute, reservation_id=draw(st.sampled_from(reservation_ids))
        )
    return ev(
        "inbound-scheduled",
        minute,
        po_id=draw(st.sampled_from(["P1", "P2"])),
        sku=draw(sku_st),
        location=draw(loc_st),
        quantity=draw(qty_st),
        eta="2026-11-05",
    )


streams_st = st.lists(any_event(["o1", "o2", "o3"], ["r1", "r2", "r3"]), max_size=40)


def final(events: list[Event], engine: Engine | None = None) -> dict[str, Any]:
    out = Collector()
    engine = engine or Engine(CATALOG, out)
    engine.emit = out
    for event in events:
        engine.process(event)
    return observable(engine)


def observable(engine: Engine) -> dict[str, Any]:
    """What a user sees: every position, every listing's availability, every reservation status."""
    positions = {
        (sku, loc): (
            stock.sellable.qty,
            stock.damaged.qty,
            stock.quarantine.qty,
            stock.reserved,
            stock.committed,
            stock.incoming,
        )
        for sku, s in engine.skus.items()
        for loc, stock in s.locations.items()
    }
    availability = {
        k: (p.available, p.backorderable)
        for s in engine.skus.values()
        for k, p in s.published.items()
        if "#" not in k
    }
    availability.update(
        {
            k: (v.published.available, v.published.backorderable)
            for k, v in engine.listings.items()
            if v.published
        }
    )
    return {
        "positions": positions,
        "availability": availability,
        "reservations": {k: v.status for k, v in engine.reservations.items()},
    }


@settings(max_examples=150, deadline=None)
@given(streams_st, st.data())
def test_duplicates_change_nothing(events: list[Event], data: st.DataObject) -> None:
    dupes = data.draw(st.lists(st.sampled_from(events), max_size=10)) if events else []
    with_dupes = list(events)
    for event in dupes:  # a redelivery comes after the original
        index = data.draw(st.integers(with_dupes.index(event) + 1, len(with_dupes)))
        with_dupes.insert(index, event)
    assert final(with_dupes) == final(events)


@settings(max_examples=150, deadline=None)
@given(st.lists(delta_event(), max_size=30), st.randoms(use_true_random=False))
def test_deltas_commute(events: list[Event], rnd: Any) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert final(shuffled)["positions"] == final(events)["positions"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(delta_event(), max_size=20),
    st.integers(0, 50),
    st.integers(0, 600),
    st.randoms(use_true_random=False),
)
def test_a_count_gives_the_same_position_wherever_it_arrives(
    events: list[Event], quantity: int, minute: int, rnd: Any
) -> None:
    stream = [*events, count("A", "wh", quantity, minute)]
    shuffled = list(stream)
    rnd.shuffle(shuffled)
    assert final(shuffled)["positions"] == final(stream)["positions"]


@settings(max_examples=100, deadline=None)
@given(streams_st, st.data())
def test_split_and_resume_from_snapshot_equals_one_run(
    events: list[Event], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(events)))
    first = Engine(CATALOG, Collector())
    for event in events[:cut]:
        first.process(event)
    snapshot = json.loads(json.dumps(first.snapshot()))  # through bytes, like a changelog
    resumed = Engine.restore(CATALOG, Collector(), snapshot)
    assert final(events[cut:], resumed) == final(events)


@settings(max_examples=150, deadline=None)
@given(st.lists(any_event(["o1", "o2"], ["r1", "r2", "r3", "r4", "r5"]), max_size=50))
def test_holds_never_oversell(events: list[Event]) -> None:
    """With stock only added and orders only confirming holds, no location is ever oversold."""
    safe = [e for e in events if e.type in ("reservation-requested", "reservation-released")]
    safe += [e for e in events if e.type == "order-created" and e.reservation_id]
    safe += [
        delta(e.sku, e.location, abs(e.quantity), (e.occurred_at - T0).total_seconds() / 60)
        for e in events
        if e.type == "stock-adjusted" and e.quantity
    ]
    safe.sort(key=lambda e: e.occurred_at)
    engine = Engine(CATALOG, Collector())
    for event in safe:
        if event.type == "order-created":  # confirm exactly what the hold holds
            res = engine.reservations.get(event.reservation_id)
            if res is None or res.status != "held":
                continue
            event = ev(
                "order-created",
                0,
                order_id=f"for-{res.reservation_id}",
                channel=res.channel,
                reservation_id=res.reservation_id,
                lines=[
                    {
                        "line_id": str(i),
                        "sku": sku,
                        "quantity": sum(u for _, u in held),
                        "location": held[0][0],
                    }
                    for i, (sku, held) in enumerate(res.held.items())
                ],
            )
            event = event.model_copy(update={"occurred_at": engine.stream_time})
        engine.process(event)
        for sku, state in engine.skus.items():
            for loc, loc_state in state.locations.items():
                assert sku_location_ats(state, loc, loc_state, CATALOG) >= 0, (sku, loc)


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    )
)
def test_a_timestamp_is_stored_as_its_exact_microseconds_and_read_back_unchanged(
    at: datetime,
) -> None:
    # table records store times as microseconds since the epoch (streams.core.state)
    assert to_us(at) == (at - EPOCH) // timedelta(microseconds=1)
    assert from_us(to_us(at)) == at
