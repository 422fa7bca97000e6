"""The SKU, order, reservation and listing stages on their own: one record in, its effects out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from streams.core.derive import ComponentUpdate, ListingState
from streams.core.orders import Confirmation, OrderState, commit_commands
from streams.core.reservations import (
    CONFIRMED,
    HELD,
    PENDING,
    REJECTED,
    RELEASED,
    ReservationDecided,
    ReservationState,
)
from streams.core.retention import LinesForgotten
from streams.core.sku import CommitLines, HoldResult, ReleaseHold, SkuCommand, SkuOutcome, TryHold
from streams.core.state import SkuState
from streams.runners.local import Collector, Engine
from streams.stages.effects import Effects, MemoryTable
from streams.stages.listings import handle_component, listing_key
from streams.stages.orders import forget_finished, handle_forgotten, handle_order
from streams.stages.reservations import compact_finished, handle_reservation
from streams.stages.skus import decided_here, derive, handle_sku, knows_request, request_here
from tests.core.builders import T0, catalog, count, delta, ev

CATALOG = catalog()


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def order(order_id: str = "o", reservation_id: str | None = None, skus: str = "AB") -> Any:
    lines = [{"line_id": str(i), "sku": sku, "quantity": 1} for i, sku in enumerate(skus)]
    return ev(
        "order-created",
        1,
        order_id=order_id,
        channel="web",
        lines=lines,
        **({"reservation_id": reservation_id} if reservation_id else {}),
    )


def request(rid: str = "r", skus: str = "AB", minute: float = 0, **fields: Any) -> Any:
    lines = [{"sku": sku, "quantity": 1} for sku in skus]
    return ev(
        "reservation-requested", minute, reservation_id=rid, channel="web", lines=lines, **fields
    )


def held(rid: str, sku: str) -> HoldResult:
    return HoldResult(rid, sku, True, (("wh", 1),))


def short(rid: str, sku: str) -> HoldResult:
    return HoldResult(rid, sku, False, (), ((0, 0),), 1, 0)


class Reservations:
    """The reservation stage over a table in memory, decided at minute 0."""

    def __init__(self) -> None:
        self.table: MemoryTable[str, ReservationState] = MemoryTable()

    def __call__(self, item: Any, now: datetime = T0) -> Effects:
        out = Effects()
        handle_reservation(self.table, item, CATALOG, lambda: now, out)
        return out

    def held_on(self, rid: str, *skus: str) -> None:
        self(request(rid, "".join(skus)))
        for sku in skus:
            self(held(rid, sku))
        assert self.table[rid].status == HELD


def commands(out: Effects) -> list[tuple[str, str]]:
    """(key, kind) of each command, in order."""
    return [(key, type(command).__name__) for key, command in out.commands]


# ---- skus ----


class Sku:
    """The SKU stage over one SKU's state, derived after each command as a batch of one."""

    def __init__(self, sku: str = "A") -> None:
        self.state = SkuState(sku, catalog_version=CATALOG.version)

    def __call__(self, command: Any, answer: bool = True) -> tuple[SkuOutcome, Effects]:
        out = Effects()
        return handle_sku(self.state, command, CATALOG, out, answer), out

    def derive(self, outcome: SkuOutcome, force: bool = False) -> Effects:
        out = Effects()
        derive(self.state, outcome.touched, T0, "cause", CATALOG, out, T0.date(), force)
        return out


def listings(out: Effects) -> list[tuple[str, str]]:
    return sorted((record.channel, record.channel_sku) for record in out.availability)


def test_a_delta_gives_its_location_s_position_and_each_listing_s_availability() -> None:
    sku = Sku()
    outcome, out = sku(count("A", "wh", 12))
    assert outcome.touched == {"wh"} and out.commands == [] and out.alerts == []
    derived = sku.derive(outcome)
    assert [(p.sku, p.location, p.on_hand) for p in derived.positions] == [("A", "wh", 12)]
    assert listings(derived) == [("amz", "amz-A"), ("web", "A"), ("web", "A-6PK")]
    # a kit of A and B: A's value goes to the listing stage, keyed by listing
    assert commands(derived) == [("web|KIT", "ComponentUpdate")]
    again, _ = sku(delta("A", "wh", -1, 1))
    assert [
        record.available for record in sku.derive(again).availability if record.channel_sku == "A"
    ] == [11]


def test_positions_come_in_location_order() -> None:
    sku = Sku()
    sku(count("A", "wh", 1))
    outcome, _ = sku(count("A", "store", 1))
    outcome.touched.add("wh")
    assert [p.location for p in sku.derive(outcome).positions] == ["store", "wh"]


def test_a_hold_s_answer_goes_to_its_reservation() -> None:
    sku = Sku()
    sku(count("A", "wh", 5))
    here = request_here(request(skus="A"), CATALOG, T0, lambda _: True)
    assert here is not None
    hold = here[1]
    _, out = sku(hold)
    assert commands(out) == [("r", "HoldResult")]
    _, unanswered = Sku()(hold, answer=False)
    assert unanswered.commands == []


def test_lines_the_sku_forgot_go_to_their_order() -> None:
    sku = Sku()
    sku(count("A", "wh", 10))
    placed = ev(
        "order-created",
        1,
        order_id="o1",
        channel="web",
        lines=[{"line_id": "1", "sku": "A", "quantity": 2, "location": "wh"}],
    )
    for command in commit_commands(placed):  # type: ignore[arg-type]
        sku(command)
    picked = ev("pick-confirmed", 2, order_id="o1", line_id="1", sku="A", location="wh", quantity=2)
    sku(picked)
    _, out = sku(delta("A", "wh", 1, 8 * 24 * 60))  # past the 7-day horizon
    assert commands(out) == [("o1", "LinesForgotten")]
    forgotten = out.commands[0][1]
    assert isinstance(forgotten, LinesForgotten) and forgotten.sku == "A"


def test_a_duplicate_sends_every_location_again() -> None:
    sku = Sku()
    sku(count("A", "store", 3))
    first = count("A", "wh", 5)
    sku(first)
    outcome, out = sku(first)
    assert outcome.duplicate and outcome.touched == {"wh", "store"}
    assert [p.location for p in sku.derive(outcome).positions] == ["store", "wh"]
    assert out.commands == []


def test_a_replayed_record_sends_the_listings_again_unchanged() -> None:
    sku = Sku()
    outcome, _ = sku(count("A", "wh", 5))
    sku.derive(outcome)
    assert sku.derive(outcome).availability == []  # unchanged: nothing to send
    assert listings(sku.derive(outcome, force=True)) == [
        ("amz", "amz-A"),
        ("web", "A"),
        ("web", "A-6PK"),
    ]


def test_a_single_sku_request_that_lives_here_is_decided_in_one_hop() -> None:
    assert request_here(request(skus="AB"), CATALOG, T0, lambda _: True) is None  # two SKUs
    assert request_here(request(skus="A"), CATALOG, T0, lambda _: False) is None  # elsewhere
    here = request_here(request(skus="A"), CATALOG, T0, lambda sku: sku == "A")
    assert here is not None
    state, hold = here
    sku = Sku()
    sku(count("A", "wh", 5))
    assert not knows_request(sku.state, "r")
    outcome, out = sku(hold, answer=False)
    assert out.commands == []
    decided_here(state, outcome, out)
    assert commands(out) == [("r", "ReservationDecided")]
    assert out.decisions == [state] and out.decided == HELD == state.status
    assert knows_request(sku.state, "r")  # a retry goes to the reservation stage


def test_the_local_runner_derives_what_the_stage_derives() -> None:
    events: list[SkuCommand] = [count("A", "wh", 7), delta("A", "store", 2, 1)]  # type: ignore[list-item]
    collected = Collector()
    engine = Engine(CATALOG, collected)
    sku = Sku()
    for event in events:
        engine.process(event)
        outcome, _ = sku(event)
        out = Effects()
        derive(
            sku.state, outcome.touched, event.occurred_at, event.event_id, CATALOG, out, T0.date()
        )
        for record in out.positions:
            assert collected.positions[(record.sku, record.location)] == record
        for listing in out.availability:
            assert collected.availabilities[(listing.channel, listing.channel_sku)] == listing


# ---- orders ----


def test_an_order_goes_to_its_skus_by_sku_and_counts_once() -> None:
    table: MemoryTable[str, OrderState] = MemoryTable()
    first, again = Effects(), Effects()
    created = order()
    handle_order(table, created, first)
    handle_order(table, created, again)  # redelivered
    assert commands(first) == [("A", "CommitLines"), ("B", "CommitLines")]
    assert first.new_order is not None and again.new_order is None
    # the same commands again, the same event ids: a SKU that has them ignores them
    assert again.commands == first.commands
    assert table["o"].created


def test_an_order_committed_in_place_sends_nothing_to_its_skus() -> None:
    table: MemoryTable[str, OrderState] = MemoryTable()
    out = Effects()
    handle_order(table, order(reservation_id="r"), out, committed=True)
    assert [c for _, c in out.commands if isinstance(c, CommitLines)] == []
    assert commands(out) == [("r", "Confirmation")]


def test_an_order_confirms_its_reservation_by_reservation_id() -> None:
    table: MemoryTable[str, OrderState] = MemoryTable()
    out = Effects()
    handle_order(table, order(reservation_id="r", skus="A"), out)
    key, confirmation = out.commands[-1]
    assert key == "r"
    assert isinstance(confirmation, Confirmation) and confirmation.skus == ("A",)


def test_a_cancel_before_its_order_is_kept_then_forgotten_past_the_horizon() -> None:
    table: MemoryTable[str, OrderState] = MemoryTable()
    cancel: Any = ev("order-cancelled", 0, order_id="early")
    handle_order(table, cancel, Effects())
    handle_order(table, order("kept"), Effects())
    assert set(table) == {"early", "kept"}
    forget_finished(table, list(table), at(1))
    assert set(table) == {"kept"}


def test_an_order_record_goes_with_its_last_forgotten_line() -> None:
    table: MemoryTable[str, OrderState] = MemoryTable()
    handle_order(table, order(), Effects())
    handle_forgotten(table, LinesForgotten("o", "A", ("0",)))
    assert "o" in table
    handle_forgotten(table, LinesForgotten("o", "B", ("1",)))
    assert "o" not in table
    handle_forgotten(table, LinesForgotten("o", "B", ("1",)))  # again: nothing to forget
    assert "o" not in table


# ---- reservations ----


def test_a_request_tries_a_hold_per_sku_and_is_decided_by_the_last_answer() -> None:
    stage = Reservations()
    out = stage(request())
    assert commands(out) == [("A", "TryHold"), ("B", "TryHold")]
    assert out.decisions == [] and out.decided is None
    assert stage.table["r"].status == PENDING
    assert stage(held("r", "A")).decisions == []
    last = stage(held("r", "B"))
    assert [d.status for d in last.decisions] == [HELD] and last.decided == HELD


def test_a_short_sku_rejects_the_request_and_releases_what_was_held() -> None:
    stage = Reservations()
    stage(request())
    stage(held("r", "A"))
    out = stage(short("r", "B"))
    assert out.decided == REJECTED
    assert commands(out) == [("A", "ReleaseHold")]
    assert [d.status for d in out.decisions] == [REJECTED]


def test_a_retried_request_gets_the_first_answer_and_holds_nothing_more() -> None:
    stage = Reservations()
    stage.held_on("r", "A", "B")
    out = stage(request())
    assert out.commands == []
    assert [d.status for d in out.decisions] == [HELD]
    assert out.decided is None  # counted once, when it was decided


def test_a_retried_pending_request_tries_again_only_the_unanswered_holds() -> None:
    stage = Reservations()
    stage(request())
    stage(held("r", "A"))
    out = stage(request())
    assert commands(out) == [("B", "TryHold")]
    assert out.decisions == []


def test_a_confirmation_that_leaves_out_a_sku_releases_it() -> None:
    stage = Reservations()
    stage.held_on("r", "A", "B")
    out = stage(Confirmation("r", "o", "e1", ("A",)))
    assert commands(out) == [("B", "ReleaseHold")]
    assert [d.status for d in out.decisions] == [CONFIRMED]


def test_a_release_of_an_unknown_id_keeps_a_later_request_from_holding() -> None:
    stage = Reservations()
    out = stage(ev("reservation-released", 0, reservation_id="r"))
    assert out.commands == [] and out.decisions == []
    assert stage.table["r"].status == RELEASED
    later = stage(request())
    assert later.commands == []
    assert [d.status for d in later.decisions] == [RELEASED]


def test_a_release_of_a_held_request_gives_every_sku_back_and_tells_again() -> None:
    stage = Reservations()
    stage.held_on("r", "A", "B")
    out = stage(ev("reservation-released", 5, reservation_id="r"))
    assert commands(out) == [("A", "ReleaseHold"), ("B", "ReleaseHold")]
    assert [d.status for d in out.decisions] == [RELEASED]


def test_a_release_while_pending_waits_for_the_answers() -> None:
    stage = Reservations()
    stage(request("r", "A"))
    out = stage(ev("reservation-released", 1, reservation_id="r"))
    assert out.commands == [] and out.decisions == []
    last = stage(held("r", "A"))
    assert commands(last) == [("A", "ReleaseHold")]
    assert last.decided == RELEASED


def test_a_request_past_its_expiry_is_decided_at_once() -> None:
    stage = Reservations()
    out = stage(request(ttl_seconds=60), now=at(2))
    assert out.commands == []
    assert out.decided == "expired" and [d.status for d in out.decisions] == ["expired"]


def test_a_request_the_catalog_cannot_serve_is_a_dead_letter() -> None:
    stage = Reservations()
    bad = ev(
        "reservation-requested",
        0,
        reservation_id="r",
        channel="web",
        lines=[{"channel_sku": "NOPE", "quantity": 1}],
    )
    out = stage(bad)
    assert len(out.dead_letters) == 1 and "NOPE" in out.dead_letters[0].reason
    assert out.dead_letters[0].source == "test"
    assert "r" not in stage.table and out.commands == []


def test_a_request_decided_where_its_sku_lives_is_kept_as_decided() -> None:
    stage = Reservations()
    decided = ReservationState("r", "web", HELD, T0, at(15), [("A", 1)], [], {"A": [("wh", 1)]})
    out = stage(ReservationDecided(decided))
    assert out.commands == [] and out.decisions == []
    assert stage.table["r"] is decided


def test_a_hold_decided_elsewhere_after_a_release_is_given_back() -> None:
    stage = Reservations()
    stage(ev("reservation-released", 0, reservation_id="r"))
    decided = ReservationState("r", "web", HELD, T0, at(15), [("A", 1)], [], {"A": [("wh", 1)]})
    out = stage(ReservationDecided(decided))
    assert commands(out) == [("A", "ReleaseHold")]
    assert [d.status for d in out.decisions] == [RELEASED]  # the record's status stands
    assert stage.table["r"].status == RELEASED


def test_finished_reservations_past_the_horizon_are_cut_to_tombstones() -> None:
    stage = Reservations()
    stage.held_on("done", "A")
    stage(ev("reservation-released", 1, reservation_id="done"))
    stage.held_on("live", "B")
    compact_finished(stage.table, list(stage.table), at(60 * 24))
    assert stage.table["done"].held == {} and stage.table["done"].status == RELEASED
    assert stage.table["live"].held == {"B": [("wh", 1)]}


def test_answers_for_an_unknown_id_change_nothing() -> None:
    stage = Reservations()
    assert commands(stage(held("r", "A"))) == []
    assert commands(stage(Confirmation("r", "o", "e1", ("A",)))) == []
    assert "r" not in stage.table


# ---- listings ----


def update(sku: str, seq: int, ats: int) -> ComponentUpdate:
    return ComponentUpdate("web", "KIT", sku, seq, ats, 0, None, at(seq), f"e{seq}")


def test_a_bundle_publishes_its_availability_once_per_change() -> None:
    table: MemoryTable[str, ListingState] = MemoryTable()
    key = listing_key(update("A", 1, 10))
    published: list[int] = []

    def apply(u: ComponentUpdate) -> Effects:
        out = Effects()
        handle_component(table, key, u, CATALOG, out)
        published.extend(record.available for record in out.availability)
        return out

    apply(update("A", 1, 10))
    apply(update("B", 2, 3))
    assert published[-1] == 3  # min(10 // 2, 3)
    count = len(published)
    assert apply(update("A", 3, 11)).availability == []  # 11 // 2 = 5: the kit still has 3
    assert apply(update("A", 1, 0)).availability == []  # older than what the listing has
    assert len(published) == count
    apply(update("B", 4, 1))
    assert published[count:] == [1]
    assert key == "web|KIT" and table[key].components["B"][0] == 4


def test_a_forced_listing_is_published_again_unchanged() -> None:
    table: MemoryTable[str, ListingState] = MemoryTable()
    for u in (update("A", 1, 10), update("B", 2, 3)):
        handle_component(table, "web|KIT", u, CATALOG, Effects())
    out = Effects()
    handle_component(table, "web|KIT", update("A", 3, 11), CATALOG, out, force=True)
    assert [record.available for record in out.availability] == [3]


def test_commands_are_typed_objects_with_their_stage_keys() -> None:
    stage = Reservations()
    out = stage(request())
    assert all(isinstance(c, TryHold) for _, c in out.commands)
    stage(held("r", "A"))
    released = stage(short("r", "B"))
    assert all(isinstance(c, ReleaseHold) for _, c in released.commands)


# ---- the local runner (Engine) runs the same stages ----


def test_the_local_runner_tells_each_decision_once_and_routes_the_releases() -> None:
    out = Collector()
    engine = Engine(CATALOG, out)
    engine.process(count("A", "wh", 5))
    engine.process(count("B", "wh", 5))
    engine.process(request())
    engine.process(request())  # retried: decided again by the stage, not told again here
    engine.process(order(reservation_id="r", skus="A"))  # leaves B out: released
    assert [d.reservation_id for d in out.decisions] == ["r"]
    assert engine.reservations["r"].status == CONFIRMED
    assert engine.skus["B"].holds == {}
    assert engine.skus["A"].holds == {}  # the order has the unit now


def test_the_local_runner_keeps_a_request_released_before_it_from_holding() -> None:
    out = Collector()
    engine = Engine(CATALOG, out)
    engine.process(count("A", "wh", 5))
    engine.process(ev("reservation-released", 0, reservation_id="r"))
    engine.process(request(skus="A", minute=1))
    assert out.decisions == []
    assert engine.skus["A"].holds == {}
