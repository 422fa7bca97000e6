"""The rules SPEC §2-§3 revised: per-SKU hold checks, split placement, the backorder clock,
confirmations that release what the order leaves out, unknown cancel lines, ties and late requests.

Every number is worked out by hand in the comment beside it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from streams.core.catalog import Catalog
from streams.core.models import Event
from streams.core.reservations import on_result, start
from streams.core.sku import HoldResult
from streams.runners.local import Collector, Engine
from tests.core.builders import catalog, count, delta, ev, run

DAY = 24 * 60  # minutes


def half_catalog(**channel: Any) -> Catalog:
    """One channel `half` on wh only at 50 %, with A, a 2-pack of A, and B."""
    return catalog(
        channels=[
            {
                "id": "half",
                "locations": ["wh"],
                "allocation_percent": 50,
                "buffer_units": 0,
                **channel,
            }
        ],
        listings=[
            {"channel": "half", "channel_sku": "A", "components": [{"sku": "A", "quantity": 1}]},
            {
                "channel": "half",
                "channel_sku": "A-2PK",
                "components": [{"sku": "A", "quantity": 2}],
            },
            {"channel": "half", "channel_sku": "B", "components": [{"sku": "B", "quantity": 1}]},
        ],
    )


def request(rid: str, minute: float, channel: str, *lines: dict[str, Any], **kw: Any) -> Event:
    return ev(
        "reservation-requested",
        minute,
        reservation_id=rid,
        channel=channel,
        lines=list(lines),
        **kw,
    )


def status(engine: Engine, rid: str) -> str:
    return engine.reservations[rid].status


def reserved(out: Collector, sku: str, loc: str) -> int:
    return out.positions[(sku, loc)].reserved


def committed(out: Collector, sku: str, loc: str) -> int:
    return out.positions[(sku, loc)].committed


# ---- 1. lines on one SKU are added up and checked once ---------------------------------------


def test_two_lines_on_one_sku_are_checked_against_channel_ats_once() -> None:
    # on hand 3, 50 % -> channel_ats floor(1.5) = 1; two lines of 1 need 2: rejected, nothing held
    engine, out = run(
        count("A", "wh", 3),
        request("r", 1, "half", {"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 1}),
        cat=half_catalog(),
    )
    assert status(engine, "r") == "rejected"
    assert reserved(out, "A", "wh") == 0
    decision = engine.reservations["r"].decision()
    assert decision["shortfall_by_sku"] == [
        {"sku": "A", "requested": 2, "available": 1, "shortfall": 1}
    ]


def test_a_pack_and_its_single_are_added_up() -> None:
    # on hand 7, 50 % -> channel_ats 3; A-2PK x1 (2 units) + A x2 (2 units) = 4 > 3: rejected
    engine, out = run(
        count("A", "wh", 7),
        request(
            "r", 1, "half", {"channel_sku": "A-2PK", "quantity": 1}, {"sku": "A", "quantity": 2}
        ),
        cat=half_catalog(),
    )
    assert status(engine, "r") == "rejected"
    assert reserved(out, "A", "wh") == 0
    # 2 + 1 = 3 fits exactly: held
    engine, out = run(
        count("A", "wh", 7),
        request(
            "r", 1, "half", {"channel_sku": "A-2PK", "quantity": 1}, {"sku": "A", "quantity": 1}
        ),
        cat=half_catalog(),
    )
    assert status(engine, "r") == "held"
    assert reserved(out, "A", "wh") == 3


def test_per_sku_total_within_channel_ats_is_held() -> None:
    # on hand 9, 50 % -> 4; lines 2 + 2 = 4: held; the channel has nothing left
    engine, out = run(
        count("A", "wh", 9),
        request("r", 1, "half", {"sku": "A", "quantity": 2}, {"sku": "A", "quantity": 2}),
        cat=half_catalog(),
    )
    assert status(engine, "r") == "held"
    assert reserved(out, "A", "wh") == 4
    assert out.availabilities[("half", "A")].available == (9 - 4) * 50 // 100


# ---- 2. placement is split across locations in sourcing order --------------------------------


def test_a_hold_no_single_location_covers_is_split_in_sourcing_order() -> None:
    # wh 2, store 1 (web: both, 100 %): available 3; a request for 3 takes 2 at wh, 1 at store
    engine, out = run(
        count("A", "wh", 2),
        count("A", "store", 1),
        request("r", 1, "web", {"sku": "A", "quantity": 3}),
    )
    assert status(engine, "r") == "held"
    assert (reserved(out, "A", "wh"), reserved(out, "A", "store")) == (2, 1)
    assert out.positions[("A", "wh")].location_ats == 0
    assert out.positions[("A", "store")].location_ats == 0
    decision = engine.reservations["r"].decision()
    assert decision["placement"] == {"A": {"wh": 2, "store": 1}}


def test_split_takes_the_highest_location_first_and_ties_to_the_first_listed() -> None:
    # wh 2, store 5: store first (5), nothing needed from wh for 4
    _, out = run(
        count("A", "wh", 2),
        count("A", "store", 5),
        request("r", 1, "web", {"sku": "A", "quantity": 4}),
    )
    assert (reserved(out, "A", "wh"), reserved(out, "A", "store")) == (0, 4)
    # a tie (3 and 3) goes to wh, listed first; 4 = 3 at wh + 1 at store
    _engine, out = run(
        count("A", "wh", 3),
        count("A", "store", 3),
        request("r", 1, "web", {"sku": "A", "quantity": 4}),
    )
    assert (reserved(out, "A", "wh"), reserved(out, "A", "store")) == (3, 1)


def test_a_hold_never_drives_a_location_negative() -> None:
    # wh has a commitment beyond its stock (ats -2): the hold comes from store only
    engine, out = run(
        count("A", "wh", 1),
        count("A", "store", 4),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 3, "location": "wh"}],
        ),
        request("r", 2, "web", {"sku": "A", "quantity": 4}),
    )
    assert status(engine, "r") == "held"
    assert (reserved(out, "A", "wh"), reserved(out, "A", "store")) == (0, 4)


def test_an_explicit_location_needs_its_units_there() -> None:
    # web channel_ats 5 (wh 1 + store 4), but the line asks 2 at wh, which has 1: rejected
    engine, _out = run(
        count("A", "wh", 1),
        count("A", "store", 4),
        request("r", 1, "web", {"sku": "A", "quantity": 2, "location": "wh"}),
    )
    assert status(engine, "r") == "rejected"
    (line,) = engine.reservations["r"].decision()["shortfall"]
    assert (line["requested"], line["available"]) == (2, 1)


# ---- 3. the backorder clock -------------------------------------------------------------------


def backorder_catalog() -> Catalog:
    return catalog(
        channels=[
            {"id": "web", "locations": ["wh", "store"]},
            {"id": "amz", "locations": ["wh"], "backorder_horizon_days": 10},
        ],
        listings=[
            {"channel": "amz", "channel_sku": "amz-A", "components": [{"sku": "A", "quantity": 1}]},
            {"channel": "web", "channel_sku": "B", "components": [{"sku": "B", "quantity": 1}]},
        ],
    )


def inbound(sku: str, qty: int, eta: str, minute: float, po: str = "po-1") -> Event:
    return ev("inbound-scheduled", minute, po_id=po, sku=sku, location="wh", quantity=qty, eta=eta)


def test_a_po_that_enters_the_horizon_as_days_pass_is_offered_with_no_event_on_its_sku() -> None:
    # builders' T0 is 2026-11-01; the PO is due 2026-11-14: 13 days out, outside 10 days
    engine, out = run(inbound("A", 8, "2026-11-14", 0), cat=backorder_catalog())
    assert out.availabilities[("amz", "amz-A")].backorderable == 0
    # stream time moves to 2026-11-04 through another SKU: 11-04 + 10 = 11-14 covers the eta
    engine.process(delta("B", "wh", 1, 3 * DAY))
    record = out.availabilities[("amz", "amz-A")]
    assert record.backorderable == 8
    assert record.restock_date is not None and record.restock_date.isoformat() == "2026-11-14"


def test_backorderable_does_not_depend_on_the_order_events_arrived_in() -> None:
    # the same events, a late delta on A either before or after stream time moved on
    po = inbound("A", 8, "2026-11-14", 0)
    later = delta("B", "wh", 1, 3 * DAY)
    late_a = delta("A", "wh", 1, 1)
    _, first = run(po, late_a, later, cat=backorder_catalog())
    _, second = run(po, later, late_a, cat=backorder_catalog())
    a = first.availabilities[("amz", "amz-A")]
    b = second.availabilities[("amz", "amz-A")]
    assert (a.available, a.backorderable, a.restock_date) == (
        b.available,
        b.backorderable,
        b.restock_date,
    )
    assert a.backorderable == 8


def test_each_po_keeps_its_own_eta() -> None:
    # PO 1 due in 5 days counts, PO 2 due in 20 days does not: backorderable 3, restock PO 1's eta
    _, out = run(
        inbound("A", 3, "2026-11-06", 0, po="p1"),
        inbound("A", 4, "2026-11-21", 0, po="p2"),
        cat=backorder_catalog(),
    )
    record = out.availabilities[("amz", "amz-A")]
    assert record.backorderable == 3
    assert record.restock_date is not None and record.restock_date.isoformat() == "2026-11-06"


# ---- 4. a confirmation releases what the order does not take ----------------------------------


def test_confirming_with_fewer_skus_releases_the_rest_of_the_hold_at_once() -> None:
    engine, out = run(
        count("A", "wh", 5),
        count("B", "wh", 5),
        request("r", 1, "web", {"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}),
        ev(
            "order-created",
            2,
            order_id="o",
            channel="web",
            reservation_id="r",
            lines=[{"line_id": "1", "sku": "A", "quantity": 2}],
        ),
    )
    assert status(engine, "r") == "confirmed"
    assert (reserved(out, "A", "wh"), committed(out, "A", "wh")) == (0, 2)
    assert reserved(out, "B", "wh") == 0  # released with the confirmation, not at the TTL
    assert out.availabilities[("web", "B")].available == 5


def test_confirming_fewer_units_releases_the_difference() -> None:
    _engine, out = run(
        count("A", "wh", 5),
        request("r", 1, "web", {"sku": "A", "quantity": 3}),
        ev(
            "order-created",
            2,
            order_id="o",
            channel="web",
            reservation_id="r",
            lines=[{"line_id": "1", "sku": "A", "quantity": 1}],
        ),
    )
    assert (reserved(out, "A", "wh"), committed(out, "A", "wh")) == (0, 1)


def test_confirmed_units_are_committed_where_they_were_held() -> None:
    # held 2 at wh and 1 at store; the order takes 4 with location store: the 3 held stay where
    # they were held, the 1 beyond the hold goes to store -> committed wh 2, store 2
    engine, out = run(
        count("A", "wh", 2),
        count("A", "store", 5),
        request("r", 1, "web", {"sku": "A", "quantity": 3, "location": "wh"}),
        cat=None,
    )
    assert status(engine, "r") == "rejected"  # wh has only 2: the explicit location decides
    engine, out = run(
        count("A", "wh", 4),
        count("A", "store", 3),
        request("r", 1, "web", {"sku": "A", "quantity": 6}),  # wh 4 then store 2
        ev(
            "order-created",
            2,
            order_id="o",
            channel="web",
            reservation_id="r",
            lines=[{"line_id": "1", "sku": "A", "quantity": 7, "location": "store"}],
        ),
    )
    assert (committed(out, "A", "wh"), committed(out, "A", "store")) == (4, 3)
    assert (reserved(out, "A", "wh"), reserved(out, "A", "store")) == (0, 0)


def split_line_order() -> list[Event]:
    """Order o's line 1 (6 of A) confirms a hold split 4 at wh and 2 at store."""
    return [
        count("A", "wh", 4),
        count("A", "store", 2),
        request("r", 1, "web", {"sku": "A", "quantity": 6}),
        ev(
            "order-created",
            2,
            order_id="o",
            channel="web",
            reservation_id="r",
            lines=[{"line_id": "1", "sku": "A", "quantity": 6}],
        ),
    ]


def test_picks_and_cancels_release_exactly_what_each_line_location_holds() -> None:
    base = split_line_order()  # line 1 committed 4 at wh and 2 at store
    pick_store = ev(
        "pick-confirmed", 3, order_id="o", line_id="1", sku="A", location="store", quantity=2
    )
    _, out = run(*base, pick_store)
    assert (committed(out, "A", "wh"), committed(out, "A", "store")) == (4, 0)
    assert out.positions[("A", "store")].on_hand == 0
    # a second pick of the same line at store takes what store no longer holds from wh
    again = ev(
        "pick-confirmed", 4, order_id="o", line_id="1", sku="A", location="store", quantity=1
    )
    _, out = run(*base, pick_store, again)
    assert (committed(out, "A", "wh"), committed(out, "A", "store")) == (3, 0)
    # a cancel of the whole order releases both parts, never more
    cancel = ev("order-cancelled", 5, order_id="o")
    _, out = run(*base, pick_store, cancel, cancel)
    assert (committed(out, "A", "wh"), committed(out, "A", "store")) == (0, 0)


def test_picks_and_cancels_of_a_split_line_commute() -> None:
    base = split_line_order()
    pick = ev("pick-confirmed", 3, order_id="o", line_id="1", sku="A", location="store", quantity=1)
    cancel = ev("order-cancelled", 3, order_id="o", lines=[{"line_id": "1", "quantity": 2}])
    _, one = run(*base, pick, cancel)
    _, two = run(*base, cancel, pick)
    for loc in ("wh", "store"):
        assert committed(one, "A", loc) == committed(two, "A", loc)
    assert committed(one, "A", "wh") + committed(one, "A", "store") == 3


# ---- 5. an order-cancelled naming a line the order does not have -------------------------------


def test_unknown_cancel_lines_cancel_the_known_ones_and_raise_an_alert() -> None:
    _engine, out = run(
        count("A", "wh", 5),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 3, "location": "wh"}],
        ),
        ev(
            "order-cancelled",
            2,
            event_id="c1",
            order_id="o",
            lines=[{"line_id": "1", "quantity": 2}, {"line_id": "9", "quantity": 1}],
        ),
    )
    assert committed(out, "A", "wh") == 1
    (alert,) = [a for a in out.alerts if a.type == "unknown-line"]
    assert "9" in alert.ids and "o" in alert.ids and "c1" in alert.ids
    assert "9" in alert.message


def test_an_early_cancel_with_an_unknown_line_alerts_when_its_order_arrives() -> None:
    _, out = run(
        count("A", "wh", 5),
        ev("order-cancelled", 1, order_id="o", lines=[{"line_id": "7", "quantity": 1}]),
        ev(
            "order-created",
            2,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 3, "location": "wh"}],
        ),
    )
    assert committed(out, "A", "wh") == 3
    assert [a.type for a in out.alerts] == ["unknown-line"]


# ---- 7. ties, late requests, ids, POs, empty shelves ------------------------------------------


def test_a_request_decided_after_its_own_expiry_is_expired_and_holds_nothing() -> None:
    engine, out = run(
        count("A", "wh", 5),
        delta("A", "wh", 1, 10),  # stream time 10 min
        request("r", 1, "web", {"sku": "A", "quantity": 1}, ttl_seconds=60),  # expired at 2 min
    )
    assert status(engine, "r") == "expired"
    assert reserved(out, "A", "wh") == 0
    # expiring exactly at the clock is not after it: expired too
    engine, _ = run(
        delta("A", "wh", 5, 2),
        request("r", 1, "web", {"sku": "A", "quantity": 1}, ttl_seconds=60),
    )
    assert status(engine, "r") == "expired"


def test_a_hold_tried_before_a_crash_is_released_when_the_redelivered_request_has_expired() -> None:
    """Live, a worker can send a request's holds, die before it commits the request's record, and
    decide the redelivered request only after its expiry: the holds sent before the crash still
    reach their SKUs, and their answers must give the units back."""
    event = request("r", 1, "half", {"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 1})
    cat = half_catalog()
    _, tries = start(event, cat)  # the first attempt: its holds are on the commands topic
    assert {t.sku for t in tries} == {"A", "B"}
    redecided, again = start(event, cat, event.occurred_at + timedelta(minutes=30))
    assert (redecided.status, again) == ("expired", [])
    releases = on_result(redecided, HoldResult("r", "A", True, (("wh", 1),)))
    assert [(r.sku, r.reservation_id) for r in releases] == [("A", "r")]
    assert on_result(redecided, HoldResult("r", "B", False, short=((1, 0),))) == []


def test_the_same_reservation_id_under_another_event_id_gets_the_first_answer() -> None:
    engine, out = run(
        count("A", "wh", 5),
        request("r", 1, "web", {"sku": "A", "quantity": 2}, event_id="e1"),
        request("r", 2, "web", {"sku": "A", "quantity": 3}, event_id="e2"),
    )
    assert status(engine, "r") == "held"
    assert reserved(out, "A", "wh") == 2
    first = engine.reservations["r"].decision()
    assert first["placement"] == {"A": {"wh": 2}}


def test_two_counts_of_the_same_instant_the_greater_event_id_wins_in_any_order() -> None:
    low = count("A", "wh", 4, 5, event_id="count-a")
    high = count("A", "wh", 9, 5, event_id="count-b")
    _, one = run(low, high)
    _, two = run(high, low)
    assert one.positions[("A", "wh")].on_hand == two.positions[("A", "wh")].on_hand == 9


def test_a_delta_at_exactly_a_counts_instant_is_inside_the_count() -> None:
    at_count = delta("A", "wh", 3, 5)
    the_count = count("A", "wh", 10, 5)
    _, one = run(at_count, the_count)
    _, two = run(the_count, at_count)
    assert one.positions[("A", "wh")].on_hand == two.positions[("A", "wh")].on_hand == 10


def test_incoming_per_po_whatever_the_arrival_order() -> None:
    receipt = delta("A", "wh", 5, 2, po_id="po-1", reason="receipt")
    schedule = inbound("A", 3, "2026-11-05", 1)
    more = inbound("A", 4, "2026-11-05", 3)
    for events in ([receipt, schedule, more], [schedule, receipt, more], [more, receipt, schedule]):
        _, out = run(*events, cat=backorder_catalog())
        assert out.positions[("A", "wh")].incoming == 2  # max(0, 3 + 4 - 5)


def test_the_eta_of_a_po_scheduled_twice_at_one_instant_does_not_depend_on_arrival() -> None:
    one = ev(
        "inbound-scheduled",
        1,
        event_id="s-a",
        po_id="p",
        sku="A",
        location="wh",
        quantity=2,
        eta="2026-11-05",
    )
    two = ev(
        "inbound-scheduled",
        1,
        event_id="s-b",
        po_id="p",
        sku="A",
        location="wh",
        quantity=2,
        eta="2026-11-25",
    )
    _, first = run(one, two, cat=backorder_catalog())
    _, second = run(two, one, cat=backorder_catalog())
    a = first.availabilities[("amz", "amz-A")]
    b = second.availabilities[("amz", "amz-A")]
    assert (a.backorderable, a.restock_date) == (b.backorderable, b.restock_date)


def test_a_count_of_zero_empties_the_shelf() -> None:
    _, out = run(delta("A", "wh", 4, 1), count("A", "wh", 0, 2))
    assert out.positions[("A", "wh")].on_hand == 0


def test_a_rejected_request_is_told_nothing_is_held() -> None:
    """A SKU that could hold its part gives it back when another SKU is short: the answer lists
    no held units and no placement, as its message says."""
    engine, out = run(
        count("A", "wh", 10),
        count("B", "wh", 2),  # half: channel ATS 1
        request("r", 1, "half", {"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}),
        cat=half_catalog(),
    )
    decision = engine.reservations["r"].decision()
    assert decision["status"] == "rejected"
    assert (decision["held"], decision["placement"]) == ([], {})
    assert decision["shortfall_by_sku"] == [
        {"sku": "B", "requested": 2, "available": 1, "shortfall": 1}
    ]
    assert reserved(out, "A", "wh") == 0
