"""Each SPEC §3 rule, with the numbers worked out by hand."""

from __future__ import annotations

from streams.core.catalog import Catalog
from streams.core.derive import Availability, ComponentUpdate, ListingState, apply_component
from streams.runners.local import Collector, Engine
from tests.core.builders import T0, catalog, count, delta, ev, run


def pos(out: Collector, sku: str, loc: str):
    return out.positions[(sku, loc)]


def avail(out: Collector, channel: str, channel_sku: str) -> int:
    return out.availabilities[(channel, channel_sku)].available


def test_location_ats_subtracts_reserved_committed_and_safety_stock() -> None:
    cat = catalog(safety_stock=[{"sku": "A", "location": "wh", "units": 3}])
    _, out = run(
        count("A", "wh", 20),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 4, "location": "wh"}],
        ),
        ev(
            "reservation-requested",
            2,
            reservation_id="r",
            channel="web",
            lines=[{"sku": "A", "quantity": 5, "location": "wh"}],
        ),
        cat=cat,
    )
    p = pos(out, "A", "wh")
    assert (p.on_hand, p.committed, p.reserved, p.safety_stock) == (20, 4, 5, 3)
    assert p.location_ats == 20 - 5 - 4 - 3


def test_channel_ats_applies_allocation_then_buffer_and_packs_floor() -> None:
    _, out = run(count("A", "wh", 15), count("A", "store", 4))
    # web: both locations, 100 %, no buffer -> 19; 6-pack -> 3
    assert avail(out, "web", "A") == 19
    assert avail(out, "web", "A-6PK") == 3
    # amz: wh only, floor(15 * 50 / 100) - 1 = 6
    assert avail(out, "amz", "amz-A") == 6


def test_network_ats_ignores_oversold_locations() -> None:
    _, out = run(
        count("A", "wh", 10),
        count("A", "store", 1),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 3, "location": "store"}],
        ),
    )
    assert pos(out, "A", "store").location_ats == -2
    assert avail(out, "web", "A") == 10  # max(0, -2) + 10


def test_bundle_is_min_over_components() -> None:
    _, out = run(count("A", "wh", 9), count("B", "wh", 10))
    assert avail(out, "web", "KIT") == 4  # min(9 // 2, 10 // 1)


def test_duplicate_event_id_changes_nothing() -> None:
    first = delta("A", "wh", 5, event_id="same")
    _, out = run(first, delta("A", "wh", 5, 1, event_id="same"), first)
    assert pos(out, "A", "wh").on_hand == 5


def test_late_count_keeps_later_deltas_and_ignores_older_ones() -> None:
    _, out = run(
        delta("A", "wh", 10, 0),  # before the count: inside it
        delta("A", "wh", -2, 30),  # after the count's time: kept on top
        count("A", "wh", 100, 20),  # arrives last, states the quantity as of minute 20
    )
    assert pos(out, "A", "wh").on_hand == 98


def test_older_count_is_ignored_and_older_delta_is_absorbed() -> None:
    _, out = run(
        count("A", "wh", 50, 20),
        count("A", "wh", 7, 10),  # older than the last applied count
        delta("A", "wh", -5, 15),  # occurred before the count: already inside it
    )
    assert pos(out, "A", "wh").on_hand == 50


def test_absorbed_pick_still_releases_its_commitment() -> None:
    _, out = run(
        count("A", "wh", 20, 0),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 3, "location": "wh"}],
        ),
        count("A", "wh", 17, 10),  # the cycle count already saw the pick
        ev("pick-confirmed", 5, order_id="o", line_id="1", sku="A", location="wh", quantity=3),
    )
    p = pos(out, "A", "wh")
    assert (p.on_hand, p.committed) == (17, 0)


def test_cancel_and_pick_release_exactly_what_the_line_holds() -> None:
    _, out = run(
        count("A", "wh", 20),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 5, "location": "wh"}],
        ),
        ev("pick-confirmed", 2, order_id="o", line_id="1", sku="A", location="wh", quantity=2),
        ev("order-cancelled", 3, order_id="o", lines=[{"line_id": "1", "quantity": 10}]),
        ev("order-cancelled", 4, order_id="o"),
    )
    p = pos(out, "A", "wh")
    assert (p.on_hand, p.committed) == (18, 0)


def test_cancel_whole_order_releases_every_sku() -> None:
    _, out = run(
        count("A", "wh", 10),
        count("B", "wh", 10),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[
                {"line_id": "1", "sku": "A", "quantity": 2},
                {"line_id": "2", "sku": "B", "quantity": 3},
            ],
        ),
        ev("order-cancelled", 2, order_id="o"),
    )
    assert pos(out, "A", "wh").committed == 0
    assert pos(out, "B", "wh").committed == 0


def test_cancel_before_its_order_still_applies() -> None:
    _, out = run(
        count("A", "wh", 10),
        ev("order-cancelled", 2, order_id="o", lines=[{"line_id": "1", "quantity": 1}]),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 4, "location": "wh"}],
        ),
    )
    assert pos(out, "A", "wh").committed == 3


def test_sourcing_picks_highest_location_ats_and_first_on_ties() -> None:
    _, out = run(
        count("A", "wh", 5),
        count("A", "store", 8),
        ev(
            "order-created",
            1,
            order_id="o1",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 3}],
        ),  # store (8 > 5)
        ev(
            "order-created",
            2,
            order_id="o2",
            channel="web",
            lines=[{"line_id": "1", "sku": "A", "quantity": 1}],
        ),  # tie 5 == 5: wh listed first
    )
    assert pos(out, "A", "store").committed == 3
    assert pos(out, "A", "wh").committed == 1


def test_uncovered_order_is_recorded_and_raises_oversell() -> None:
    _, out = run(
        count("A", "wh", 2),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            event_id="big",
            lines=[{"line_id": "1", "sku": "A", "quantity": 5}],
        ),
    )
    assert pos(out, "A", "wh").committed == 5
    [alert] = out.alerts
    assert alert.type == "oversell" and alert.quantity == 3 and "o" in alert.ids


def test_negative_on_hand_raises_alert() -> None:
    _, out = run(delta("A", "wh", 1), delta("A", "wh", -3, 1))
    assert [a.type for a in out.alerts] == ["negative-on-hand"]


def test_incoming_drops_with_receipt_never_below_zero_and_feeds_backorder() -> None:
    _, out = run(
        count("A", "wh", 0),
        ev(
            "inbound-scheduled",
            1,
            po_id="PO",
            sku="A",
            location="wh",
            quantity=30,
            eta="2026-11-05",
        ),
        delta("A", "wh", 10, 2, reason="receipt", po_id="PO"),
    )
    p = pos(out, "A", "wh")
    assert (p.on_hand, p.incoming) == (10, 20)
    record = out.availabilities[("amz", "amz-A")]
    # amz: floor(20 * 50%) - 1 = 9 backorderable, restock on the PO's eta
    assert (record.backorderable, str(record.restock_date)) == (9, "2026-11-05")
    _, out = run(
        ev(
            "inbound-scheduled", 1, po_id="PO", sku="A", location="wh", quantity=5, eta="2026-11-05"
        ),
        delta("A", "wh", 8, 2, reason="receipt", po_id="PO"),
    )
    assert pos(out, "A", "wh").incoming == 0


def test_backorder_outside_horizon_is_not_offered() -> None:
    _, out = run(
        ev(
            "inbound-scheduled",
            1,
            po_id="PO",
            sku="A",
            location="wh",
            quantity=30,
            eta="2026-12-31",
        ),
    )
    record = out.availabilities[("amz", "amz-A")]
    assert (record.backorderable, record.restock_date) == (0, None)


def test_returns_go_to_their_disposition_bucket() -> None:
    _, out = run(
        ev("return-received", 1, sku="A", location="wh", quantity=2, disposition="resellable"),
        ev("return-received", 2, sku="A", location="wh", quantity=1, disposition="damaged"),
        ev("return-received", 3, sku="A", location="wh", quantity=4, disposition="quarantine"),
        delta("A", "wh", 3, 4, bucket="damaged"),
    )
    p = pos(out, "A", "wh")
    assert (p.on_hand, p.damaged, p.quarantine) == (2, 4, 4)


def test_reservation_is_all_or_nothing_with_shortfall_per_line() -> None:
    engine, out = run(
        count("A", "wh", 10),
        count("B", "wh", 1),
        ev(
            "reservation-requested",
            1,
            reservation_id="r",
            channel="web",
            lines=[{"sku": "A", "quantity": 4}, {"channel_sku": "KIT", "quantity": 2}],
        ),
    )
    res = engine.reservations["r"]
    assert res.status == "rejected"
    assert res.shortfall() == [
        {"line": 1, "item": "KIT", "requested": 2, "available": 1, "shortfall": 1}
    ]
    assert pos(out, "A", "wh").reserved == 0  # the part held on A was released
    assert pos(out, "B", "wh").reserved == 0


def test_reservation_is_idempotent_by_id() -> None:
    engine, out = run(
        count("A", "wh", 10),
        ev(
            "reservation-requested",
            1,
            reservation_id="r",
            channel="web",
            lines=[{"sku": "A", "quantity": 4}],
        ),
        ev(
            "reservation-requested",
            2,
            reservation_id="r",
            channel="web",
            lines=[{"sku": "A", "quantity": 4}],
        ),
    )
    assert pos(out, "A", "wh").reserved == 4
    assert engine.reservations["r"].status == "held"


def test_hold_confirmed_by_order_becomes_commitment_exactly_once() -> None:
    engine, out = run(
        count("A", "wh", 10),
        ev(
            "reservation-requested",
            1,
            reservation_id="r",
            channel="web",
            lines=[{"sku": "A", "quantity": 4}],
        ),
        ev(
            "order-created",
            2,
            order_id="o",
            channel="web",
            reservation_id="r",
            lines=[{"line_id": "1", "sku": "A", "quantity": 4}],
        ),
        ev(
            "order-created",
            3,
            order_id="o2",
            channel="web",
            reservation_id="r",
            lines=[{"line_id": "1", "sku": "A", "quantity": 1}],
        ),
        ev("reservation-released", 4, reservation_id="r"),
    )
    p = pos(out, "A", "wh")
    assert (p.reserved, p.committed) == (0, 5)
    assert engine.reservations["r"].status == "confirmed"


def test_hold_expires_when_stream_time_passes_its_ttl() -> None:
    engine, out = run(
        count("A", "wh", 10),
        ev(
            "reservation-requested",
            0,
            reservation_id="r",
            channel="web",
            ttl_seconds=60,
            lines=[{"sku": "A", "quantity": 4}],
        ),
        delta("A", "wh", 1, 1),  # exactly at the expiry: not passed yet
    )
    assert engine.reservations["r"].status == "held"
    engine.process(delta("A", "wh", 1, 1.5))
    assert engine.reservations["r"].status == "expired"
    assert pos(out, "A", "wh").reserved == 0
    assert [e.type for e in out.system_events] == ["reservation-expired"]
    # an order confirming an expired hold commits without it, and the hold is not released twice
    engine.process(
        ev(
            "order-created",
            2,
            order_id="o",
            channel="web",
            reservation_id="r",
            lines=[{"line_id": "1", "sku": "A", "quantity": 4}],
        )
    )
    p = pos(out, "A", "wh")
    assert (p.on_hand, p.reserved, p.committed) == (12, 0, 4)


def test_holds_respect_channel_allocation_and_buffer() -> None:
    engine, _ = run(
        count("A", "wh", 20),
        ev(
            "reservation-requested",
            1,
            reservation_id="r1",
            channel="amz",
            lines=[{"sku": "A", "quantity": 9}],
        ),  # amz: floor(20 * 50%) - 1 = 9
        ev(
            "reservation-requested",
            2,
            reservation_id="r2",
            channel="amz",
            lines=[{"sku": "A", "quantity": 1}],
        ),  # floor(11 * 50%) - 1 = 4: fits
        ev(
            "reservation-requested",
            3,
            reservation_id="r3",
            channel="amz",
            lines=[{"channel_sku": "amz-A", "quantity": 4}],
        ),  # floor(10 * 50%) - 1 = 4: fits
        ev(
            "reservation-requested",
            4,
            reservation_id="r4",
            channel="amz",
            lines=[{"sku": "A", "quantity": 3}],
        ),  # floor(6 * 50%) - 1 = 2: short
    )
    statuses = [engine.reservations[r].status for r in ("r1", "r2", "r3", "r4")]
    assert statuses == ["held", "held", "held", "rejected"]


def test_catalog_change_recomputes_availability() -> None:
    engine, out = run(count("A", "wh", 10))
    assert avail(out, "web", "A") == 10
    data = catalog().model_dump()
    data["channels"][0]["buffer_units"] = 4
    data["version"] = 2
    engine.set_catalog(catalog(**{k: v for k, v in data.items() if k != "version"}))
    assert avail(out, "web", "A") == 6


def test_availability_versions_strictly_increase_and_only_on_change() -> None:
    versions: list[int] = []

    class Spy(Collector):
        def availability(self, record):  # type: ignore[no-untyped-def]
            if record.channel_sku == "A" and record.channel == "web":
                versions.append(record.version)
            super().availability(record)

    engine = Engine(catalog(), Spy())
    for i, event in enumerate(
        [
            count("A", "wh", 5),
            delta("A", "wh", 1, 1),
            delta("A", "store", 2, 2),
            ev(
                "inbound-scheduled",
                3,
                po_id="P",
                sku="A",
                location="store",
                quantity=1,
                eta="2026-11-03",
            ),
        ]
    ):
        engine.process(event)
        assert len(versions) == min(i + 1, 3)
    assert versions == [1, 2, 3]


def test_release_that_overtakes_its_request_keeps_the_request_from_holding() -> None:
    engine, out = run(
        count("A", "wh", 10),
        ev("reservation-released", 2, reservation_id="r"),
        ev(
            "reservation-requested",
            1,
            reservation_id="r",
            channel="web",
            lines=[{"sku": "A", "quantity": 4}],
        ),
    )
    assert engine.reservations["r"].status == "released"
    assert pos(out, "A", "wh").reserved == 0


def test_versions_continue_above_a_floor_after_recovery_from_an_older_state() -> None:
    from streams.core.derive import sku_availability
    from streams.core.state import SkuState

    engine, out = run(count("A", "wh", 5))
    snapshot = SkuState.from_dict(engine.skus["A"].to_dict())  # what a changelog would restore
    first = out.availabilities[("web", "A")].version
    records, _ = sku_availability(snapshot, catalog(), T0, "x", force=True, floor=first + 1000)
    by_key = {(r.channel, r.channel_sku): r.version for r in records}
    assert by_key[("web", "A")] == first + 1000
    records, _ = sku_availability(snapshot, catalog(), T0, "x", force=True, floor=0)
    assert {(r.channel, r.channel_sku): r.version for r in records}[("web", "A")] == first + 1001


def test_an_orphan_hold_is_dropped_at_the_first_hourly_pass_after_expiry_plus_grace() -> None:
    from datetime import timedelta

    from streams.core.sku import HoldRequirement, TryHold, apply_sku
    from streams.core.state import SkuState

    state = SkuState("A")
    cat = catalog()
    apply_sku(state, count("A", "wh", 10), cat)
    hold = TryHold(
        "h1",
        T0,
        "A",
        "r-orphan",
        "web",
        T0 + timedelta(minutes=15),
        (HoldRequirement(0, 4, 1, "wh"),),
    )
    assert apply_sku(state, hold, cat).hold.ok
    assert state.locations["wh"].reserved == 4  # its release was lost: nobody will send it
    apply_sku(state, delta("A", "wh", 1, 60), cat)  # 09:00 pass: 45 min past expiry, in grace
    assert state.locations["wh"].reserved == 4
    apply_sku(state, delta("A", "wh", 1, 80), cat)  # 09:20: no pass inside the hour
    assert state.locations["wh"].reserved == 4
    apply_sku(state, delta("A", "wh", 1, 125), cat)  # 10:05 pass: 1 h 50 min past expiry
    assert state.locations["wh"].reserved == 0
    assert apply_sku(state, hold, cat).duplicate  # and a redelivered request is not re-placed
    assert state.locations["wh"].reserved == 0


def test_catalog_change_zeroes_removed_listings_and_derives_new_ones() -> None:
    engine, out = run(count("A", "wh", 12), count("B", "wh", 5))
    assert avail(out, "web", "A-6PK") == 2
    assert avail(out, "web", "KIT") == 5
    data = catalog().model_dump()
    data["listings"] = [
        item
        for item in data["listings"]
        if item["channel_sku"] not in ("A-6PK", "KIT")  # a pack and a bundle removed
    ] + [
        {
            "channel": "amz",
            "channel_sku": "amz-KIT",
            "components": [{"sku": "A", "quantity": 3}, {"sku": "B", "quantity": 1}],
        }
    ]
    data["version"] = 2
    engine.set_catalog(catalog(**data))
    assert avail(out, "web", "A-6PK") == 0
    assert avail(out, "web", "KIT") == 0
    # amz: 50% of wh then a buffer of 1 -> A 5, B 1; the new kit is min(5 // 3, 1 // 1)
    assert avail(out, "amz", "amz-KIT") == 1
    assert avail(out, "web", "A") == 12
    # the zeros are published once: another change of A does not repeat them
    zeros = {k: out.availabilities[("web", k)].version for k in ("A-6PK", "KIT")}
    engine.process(delta("A", "wh", 1, 1))
    assert avail(out, "web", "A") == 13
    assert {k: out.availabilities[("web", k)].version for k in ("A-6PK", "KIT")} == zeros


def test_redelivered_whole_order_cancel_cancels_only_what_it_cancelled_first() -> None:
    """An order created again with more lines after a whole-order cancel: a redelivery of that
    cancel must not cancel the new line (found by the duplicates property)."""
    cancel = ev("order-cancelled", 2, event_id="c1", order_id="o")
    engine, out = run(
        count("A", "wh", 5),
        count("B", "wh", 5),
        ev(
            "order-created",
            1,
            order_id="o",
            channel="web",
            lines=[{"line_id": "0", "sku": "A", "quantity": 1}],
        ),
        cancel,
        ev(
            "order-created",
            3,
            order_id="o",
            channel="web",
            lines=[
                {"line_id": "0", "sku": "A", "quantity": 1},
                {"line_id": "1", "sku": "B", "quantity": 1},
            ],
        ),
    )
    assert pos(out, "B", "wh").committed == 1
    engine.process(cancel)  # redelivered
    assert pos(out, "B", "wh").committed == 1
    assert pos(out, "A", "wh").committed == 0


def test_a_redelivery_inside_a_count_is_known_as_one_so_its_outputs_are_sent_again() -> None:
    """A pick or a PO receipt that the last count already holds still changed the record (a
    commitment released, incoming lowered). Redelivered after a worker died before sending what
    the first delivery produced, it must be known as a redelivery, or those outputs are lost for
    good (found by the stage-fault integration test: positions right, one availability stale)."""
    from streams.core.orders import commit_commands
    from streams.core.sku import apply_sku
    from streams.core.state import SkuState

    cat = catalog()
    state = SkuState("A")
    order = ev(
        "order-created",
        1,
        order_id="o",
        channel="web",
        lines=[{"line_id": "1", "sku": "A", "quantity": 3, "location": "wh"}],
    )
    po = ev(
        "inbound-scheduled", 1, po_id="po", sku="A", location="wh", quantity=5, eta="2026-11-05"
    )
    for event in (count("A", "wh", 20, 0), po, count("A", "wh", 17, 10)):
        apply_sku(state, event, cat)
    for command in commit_commands(order):  # type: ignore[arg-type]
        apply_sku(state, command, cat)
    pick = ev("pick-confirmed", 5, order_id="o", line_id="1", sku="A", location="wh", quantity=3)
    receipt = delta("A", "wh", 2, 6, po_id="po", reason="receipt")
    for event in (pick, receipt):
        first = apply_sku(state, event, cat)
        assert not first.duplicate and first.touched == {"wh"}
        assert apply_sku(state, event, cat).duplicate, event.type


def test_a_redelivered_component_value_publishes_its_listing_again_under_a_new_version() -> None:
    """The listing stage's state may reach its changelog while the record it published is lost
    with the worker; the component value redelivered then sends the listing again. An older
    value still changes nothing."""
    cat = catalog()
    state, first = kit_published(cat)
    again = apply_component(state, update(5, 3), cat)
    assert again is not None and (again.available, again.version) == (3, first.version + 1)
    assert apply_component(state, update(4, 1), cat) is None


def test_a_forced_component_value_publishes_its_listing_even_when_unchanged() -> None:
    """In a replay window (a record older than what a dead worker may have sent), a new component
    value that leaves the listing as published still sends it, under a new version; without
    `force` it does not, and an older value sends nothing either way."""
    cat = catalog()
    state, first = kit_published(cat)
    assert apply_component(state, update(6, 3), cat) is None
    forced = apply_component(state, update(7, 3), cat, force=True)
    assert forced is not None and (forced.available, forced.version) == (3, first.version + 1)
    assert apply_component(state, update(4, 1), cat, force=True) is None


def update(seq: int, ats: int) -> ComponentUpdate:
    """Component B's value for the listing KIT, as the SKU stage sends it."""
    return ComponentUpdate("web", "KIT", "B", seq, ats, 0, None, T0, f"e{seq}")


def kit_published(cat: Catalog) -> tuple[ListingState, Availability]:
    """KIT's listing state with A at 10 and B at 3 (seq 5), and the record that published it."""
    state = ListingState({})
    apply_component(state, ComponentUpdate("web", "KIT", "A", 1, 10, 0, None, T0, "a"), cat)
    first = apply_component(state, update(5, 3), cat)
    assert first is not None and first.available == 3
    return state, first


def test_a_refused_hold_stays_refused_and_a_released_one_never_holds_again() -> None:
    """A reservation id the SKU refused is refused again, whatever the stock is by then: a worker
    SIGKILLed after a 409 lost the reservation stage's record of it, and the request, redelivered,
    was decided again through the stage; the SKU knew the id only as "closed", answered it as held
    with nothing placed, and the retry got a 201 that held no unit."""
    from datetime import timedelta

    from streams.core.sku import HoldRequirement, ReleaseHold, TryHold, apply_sku
    from streams.core.state import SkuState

    state = SkuState("A")
    cat = catalog()
    apply_sku(state, count("A", "wh", 1), cat)

    def hold(rid: str, units: int) -> TryHold:
        return TryHold(
            f"e-{rid}", T0, "A", rid, "web", T0 + timedelta(minutes=15),
            (HoldRequirement(0, units, 1, None),),
        )  # fmt: skip

    refused = apply_sku(state, hold("big", 2), cat).hold
    assert not refused.ok and refused.short == ((0, 1),)
    apply_sku(state, delta("A", "wh", 5, 1), cat)  # now 6 on hand: 2 would fit
    again = apply_sku(state, hold("big", 2), cat)
    assert again.duplicate and not again.hold.ok and again.hold.held == ()
    assert state.locations["wh"].reserved == 0

    assert apply_sku(state, hold("small", 1), cat).hold.held == (("wh", 1),)
    assert apply_sku(state, hold("small", 1), cat).hold.held == (("wh", 1),)  # a retry: the same
    assert state.locations["wh"].reserved == 1
    apply_sku(state, ReleaseHold("e-rel", T0, "A", "small", "released"), cat)
    assert apply_sku(state, hold("small", 1), cat).duplicate
    assert state.locations["wh"].reserved == 0
