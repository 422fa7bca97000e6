"""State is bounded by open business: what is finished is forgotten 7 days (business time) on.

Order records go with their last line (the SKU records forget a picked or cancelled line 7 days
after its last change), an order record that only ever had cancels goes 7 days after them, a
finished reservation shrinks to a tombstone that still answers a repeated request, and a PO with
nothing left to come is dropped from its location.
"""

from __future__ import annotations

from streams.core.reservations import (
    CONFIRMED,
    EXPIRED,
    HELD,
    REJECTED,
    RELEASED,
    ReservationState,
)
from streams.core.state import Commitment, LocationState
from streams.runners.local import Collector, Engine
from tests.core.builders import count, delta, ev, run

DAY = 24 * 60  # minutes
LATER = 8 * DAY  # a business time past the 7-day horizon


def order(order_id: str, minute: float, *lines: tuple[str, str, int], **kw: object):
    return ev(
        "order-created",
        minute,
        order_id=order_id,
        channel="web",
        lines=[
            {"line_id": line_id, "sku": sku, "quantity": qty, "location": "wh"}
            for line_id, sku, qty in lines
        ],
        **kw,
    )


def pick(order_id: str, line_id: str, sku: str, qty: int, minute: float):
    return ev(
        "pick-confirmed",
        minute,
        order_id=order_id,
        line_id=line_id,
        sku=sku,
        location="wh",
        quantity=qty,
    )


def request(rid: str, minute: float, qty: int = 2, **kw: object):
    return ev(
        "reservation-requested",
        minute,
        reservation_id=rid,
        channel="web",
        lines=[{"sku": "A", "quantity": qty}],
        **kw,
    )


def test_a_picked_order_is_forgotten_with_its_line_seven_days_on() -> None:
    engine, _ = run(
        count("A", "wh", 10),
        order("o1", 1, ("1", "A", 2)),
        pick("o1", "1", "A", 2, 2),
        delta("A", "wh", 1, 6 * DAY),  # six days on: still remembered
    )
    assert "o1" in engine.orders
    engine.process(delta("A", "wh", 1, LATER))
    assert "o1/1" not in engine.skus["A"].commitments
    assert "o1" not in engine.orders


def test_an_order_keeps_its_open_lines_and_a_later_cancel_still_releases_them() -> None:
    engine, out = run(
        count("A", "wh", 10),
        count("B", "wh", 10),
        order("o2", 1, ("1", "A", 2), ("2", "B", 3)),
        pick("o2", "1", "A", 2, 2),
        delta("A", "wh", 1, LATER),
        delta("B", "wh", 1, LATER + 1),
    )
    assert engine.orders["o2"].lines == {"2": "B"}  # the picked line went, the open one stays
    assert out.positions[("B", "wh")].committed == 3
    engine.process(ev("order-cancelled", LATER + 2, order_id="o2"))
    assert out.positions[("B", "wh")].committed == 0
    assert not [a for a in out.alerts if a.type == "unknown-line"]
    engine.process(delta("B", "wh", 1, 2 * LATER))
    assert "o2" not in engine.orders


def test_an_open_order_is_kept_however_old() -> None:
    engine, out = run(count("A", "wh", 10), order("o3", 1, ("1", "A", 2)))
    for days in (8, 16, 30):
        engine.process(delta("A", "wh", 1, days * DAY))
    assert engine.orders["o3"].lines == {"1": "A"}
    engine.process(ev("order-cancelled", 30 * DAY + 1, order_id="o3"))
    assert out.positions[("A", "wh")].committed == 0


def test_an_order_record_of_cancels_alone_is_forgotten_seven_days_on() -> None:
    engine, _ = run(ev("order-cancelled", 0, order_id="o4"), delta("A", "wh", 1, 3 * DAY))
    assert engine.orders["o4"].pending  # its order may still come
    engine.process(delta("A", "wh", 1, LATER))
    assert "o4" not in engine.orders


def test_a_line_the_order_commits_again_is_not_forgotten() -> None:
    """An order-created redelivered after its lines were forgotten commits them again (past the
    7-day horizon), so the order's record must not be dropped under the new commitment."""
    created = order("o5", 1, ("1", "A", 2))
    engine, _ = run(count("A", "wh", 10), created, pick("o5", "1", "A", 2, 2))
    engine.process(order("o5", LATER, ("1", "A", 2), event_id=created.event_id))
    assert engine.orders["o5"].lines == {"1": "A"}
    assert engine.skus["A"].commitments["o5/1"].open == 2


def test_a_finished_reservation_becomes_a_tombstone_that_still_answers() -> None:
    engine, out = run(
        count("A", "wh", 10),
        request("r1", 1),
        order("o6", 2, ("1", "A", 2), reservation_id="r1"),
    )
    assert engine.reservations["r1"].status == CONFIRMED
    engine.process(delta("A", "wh", 1, LATER))
    kept = engine.reservations["r1"]
    assert (kept.status, kept.lines, kept.held, kept.waiting) == (CONFIRMED, [], {}, [])
    assert kept.to_dict().keys() == {"id", "ch", "st", "at", "ex"}  # ~80 bytes on its changelog
    assert ReservationState.from_dict(kept.to_dict()) == kept
    # the same id again, under a new event id and a new time: the same answer, nothing held
    engine.process(request("r1", LATER + 1))
    assert engine.reservations["r1"].status == CONFIRMED
    assert out.positions[("A", "wh")].reserved == 0
    assert out.decisions[-1].status != HELD


def test_every_finished_status_is_compacted_and_an_open_hold_is_not() -> None:
    engine, _ = run(
        count("A", "wh", 10),
        request("released", 1),
        ev("reservation-released", 2, reservation_id="released"),
        request("rejected", 3, qty=50),
        request("expired", 4),  # expires 15 minutes on
        ev("reservation-released", 5, reservation_id="never-requested"),
    )
    engine.process(delta("A", "wh", 1, 6 * DAY))  # the hold of "expired" expires
    statuses = {
        "released": RELEASED,
        "rejected": REJECTED,
        "expired": EXPIRED,
        "never-requested": RELEASED,
    }
    assert {rid: r.status for rid, r in engine.reservations.items()} == statuses
    assert engine.reservations["rejected"].short  # kept in full inside the horizon
    engine.process(request("open", LATER, ttl_seconds=3600))
    for rid, status in statuses.items():
        tombstone = engine.reservations[rid]
        assert (tombstone.status, tombstone.lines, tombstone.short) == (status, [], {})
    assert engine.reservations["open"].status == HELD
    assert engine.reservations["open"].held == {"A": [("wh", 2)]}


def test_a_po_with_nothing_left_to_come_is_dropped_seven_days_on() -> None:
    def schedule(po: str, qty: int, minute: float):
        return ev(
            "inbound-scheduled",
            minute,
            po_id=po,
            sku="A",
            location="wh",
            quantity=qty,
            eta="2026-11-20",
        )

    engine, out = run(
        schedule("received", 5, 0),
        delta("A", "wh", 5, 60, po_id="received", reason="receipt"),
        schedule("open", 3, 0),
        delta("A", "wh", 2, 60, po_id="receipt-only", reason="receipt"),
        schedule("late-receipt", 4, 0),
        delta("A", "wh", 4, 5 * DAY, po_id="late-receipt", reason="receipt"),
    )
    engine.process(delta("A", "wh", 1, LATER))
    assert sorted(engine.skus["A"].locations["wh"].inbound) == ["late-receipt", "open"]
    assert out.positions[("A", "wh")].incoming == 3
    engine.process(delta("A", "wh", 1, 2 * LATER))
    assert sorted(engine.skus["A"].locations["wh"].inbound) == ["open"]


def test_pruned_state_survives_a_snapshot() -> None:
    engine, _ = run(
        count("A", "wh", 10),
        order("o7", 1, ("1", "A", 2)),
        ev("inbound-scheduled", 2, po_id="p", sku="A", location="wh", quantity=3, eta="2026-11-20"),
        delta("A", "wh", 1, LATER),
    )
    again = Engine.restore(engine.catalog, Collector(), engine.snapshot())
    assert again.snapshot() == engine.snapshot()
    assert again.skus["A"].locations["wh"].inbound["p"].touched_at is not None
    assert again.skus["A"].commitments["o7/1"].order_len == 2


def test_records_written_before_pruning_still_read() -> None:
    old = {
        "b": [[0, None, "", {}]] * 3,
        "r": 0,
        "c": 0,
        "i": {"p": [{"e1": 3}, {}, None, None, ""]},
        "v": 1,
    }
    assert LocationState.from_dict(old).inbound["p"].touched_at is None
    line = Commitment.from_dict([{"wh": 2}, {}, {}, None])
    assert (line.parts, line.order_len) == ({"wh": 2}, 0)
    legacy = Commitment.from_dict(["wh", 2, {"p1": 1}, {}, None])  # before lines could be split
    assert (legacy.parts, legacy.open) == ({"wh": 2}, 1)


def test_ids_holding_slashes_reach_the_right_order_record() -> None:
    oid, lid = "gid://shopify/Order/1", "gid://shopify/LineItem/7"
    engine, _ = run(count("A", "wh", 10), order(oid, 1, (lid, "A", 2)), pick(oid, lid, "A", 2, 2))
    assert engine.orders[oid].lines == {lid: "A"}
    engine.process(delta("A", "wh", 1, LATER))
    assert oid not in engine.orders
