"""A stage that recognises a record it has applied before sends that record's outputs again.

Live, a worker's changelog can be ahead of its committed offsets and of its outputs: a commit
writes the table records, then the outputs and the records a batch handled meanwhile reach the
broker, and a SIGKILL in between loses those outputs while the changelog keeps their effect. The
redelivered record then finds its effect applied. The SKU stage answers with `duplicate` and sends
its values again; the order and reservation stages must do the same with what they send: the
commands to the SKUs (each idempotent there by event id) and the decision. bench/faults.py found
releases answered 200 whose reservation stayed held, and committed units left by lost cancels.
"""

from __future__ import annotations

from streams.core.catalog import Catalog
from streams.core.models import OrderCancelled, OrderCreated, ReservationRequested
from streams.core.orders import OrderState, commit_commands, route_order
from streams.core.reservations import (
    CONFIRMED,
    EXPIRED,
    HELD,
    PENDING,
    REJECTED,
    RELEASED,
    ReservationState,
    on_confirmed,
    on_decided,
    on_release,
    on_result,
    resume,
    start,
)
from streams.core.sku import CancelLines, HoldResult, ReleaseHold, apply_sku
from streams.core.state import SkuState
from tests.core.builders import catalog, ev


def two_sku_request(rid: str = "r") -> ReservationRequested:
    event = ev(
        "reservation-requested",
        1,
        reservation_id=rid,
        channel="web",
        lines=[{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}],
    )
    assert isinstance(event, ReservationRequested)
    return event


def held(cat: Catalog) -> ReservationState:
    state, _ = start(two_sku_request(), cat)
    on_result(state, HoldResult("r", "A", True, (("wh", 2),)))
    on_result(state, HoldResult("r", "B", True, (("wh", 1),)))
    assert state.status == HELD
    return state


def releases(commands: list[ReleaseHold]) -> list[tuple[str, str, str]]:
    return [(r.event_id, r.sku, r.reason) for r in commands]


def test_a_redelivered_release_gives_back_the_same_holds_again() -> None:
    state = held(catalog())
    release = ev("reservation-released", 5, reservation_id="r")
    first = on_release(state, release)  # type: ignore[arg-type]
    assert state.status == RELEASED
    again = on_release(state, release)  # type: ignore[arg-type]
    assert (
        releases(again)
        == releases(first)
        == [
            ("r/released", "A", "released"),
            ("r/released", "B", "released"),
        ]
    )
    assert state.status == RELEASED  # the status stands


def test_an_expiry_after_a_release_gives_back_the_release_not_an_expiry() -> None:
    state = held(catalog())
    on_release(state, ev("reservation-released", 5, reservation_id="r"))  # type: ignore[arg-type]
    again = on_release(state, ev("reservation-expired", 9, reservation_id="r"))  # type: ignore[arg-type]
    assert state.status == RELEASED
    assert {r.event_id for r in again} == {"r/released"}  # the same ids: the SKUs recognise them


def test_a_release_of_a_rejected_request_repeats_the_rejections_releases() -> None:
    state, _ = start(two_sku_request(), catalog())
    on_result(state, HoldResult("r", "A", True, (("wh", 2),)))
    first = on_result(state, HoldResult("r", "B", False, short=((1, 0),), requested=1))
    assert state.status == REJECTED
    assert releases(first) == [("r/rejected", "A", "rejected")]
    again = on_release(state, ev("reservation-released", 5, reservation_id="r"))  # type: ignore[arg-type]
    assert releases(again) == releases(first)
    assert state.status == REJECTED


def test_a_redelivered_answer_to_a_rejected_request_gives_back_its_part_again() -> None:
    state, _ = start(two_sku_request(), catalog())
    answer = HoldResult("r", "A", True, (("wh", 2),))
    on_result(state, answer)
    first = on_result(state, HoldResult("r", "B", False, short=((1, 0),), requested=1))
    assert releases(on_result(state, answer)) == releases(first)


def test_a_redelivered_answer_to_a_held_request_sends_nothing() -> None:
    state = held(catalog())
    assert on_result(state, HoldResult("r", "A", True, (("wh", 2),))) == []
    assert state.status == HELD


def test_a_redelivered_confirmation_gives_back_what_the_order_left_out_again() -> None:
    state = held(catalog())
    first = on_confirmed(state, ("A",))
    assert state.status == CONFIRMED
    assert (
        releases(on_confirmed(state, ("A",)))
        == releases(first)
        == [("r/confirmed", "B", "confirmed")]
    )


def test_a_confirmation_of_a_released_hold_sends_nothing() -> None:
    state = held(catalog())
    on_release(state, ev("reservation-released", 5, reservation_id="r"))  # type: ignore[arg-type]
    assert on_confirmed(state, ("A",)) == []
    assert state.status == RELEASED


def test_a_redelivered_request_still_pending_tries_the_skus_that_have_not_answered() -> None:
    cat = catalog()
    event = two_sku_request()
    state, tries = start(event, cat)
    assert {t.sku for t in tries} == {"A", "B"}
    on_result(state, HoldResult("r", "A", True, (("wh", 2),)))
    assert state.status == PENDING
    again = resume(state, event, cat)
    assert [(t.sku, t.event_id, t.requirements) for t in again] == [
        (t.sku, t.event_id, t.requirements) for t in tries if t.sku == "B"
    ]


def test_a_redelivered_request_already_decided_tries_nothing() -> None:
    cat = catalog()
    state = held(cat)
    assert resume(state, two_sku_request(), cat) == []
    expired, _ = start(two_sku_request(), cat, two_sku_request().occurred_at.replace(year=2030))
    assert expired.status == EXPIRED
    assert resume(expired, two_sku_request(), cat) == []


def test_a_redelivered_order_sends_the_cancels_that_came_before_it_again() -> None:
    """A cancel that overtook its order is applied when the order arrives; the order's record
    then forgets it was pending. Redelivered, the order must send that cancel again: lost, it
    leaves the line's units committed for good."""
    order = ev(
        "order-created",
        2,
        order_id="o",
        channel="web",
        lines=[
            {"line_id": "1", "sku": "A", "quantity": 2},
            {"line_id": "2", "sku": "B", "quantity": 1},
        ],
    )
    cancel = ev("order-cancelled", 1, order_id="o", lines=[{"line_id": "1", "quantity": 1}])
    assert isinstance(order, OrderCreated) and isinstance(cancel, OrderCancelled)
    state = OrderState()
    assert route_order(state, cancel).commands == []  # pending: the order is not known yet
    first = route_order(state, order)
    cancels = [c for c in first.commands if isinstance(c, CancelLines)]
    assert [(c.event_id, c.sku, c.lines) for c in cancels] == [(cancel.event_id, "A", (("1", 1),))]
    restored = OrderState.from_dict(state.to_dict())  # as a restart recovers it
    again = route_order(restored, order)
    assert [c for c in again.commands if isinstance(c, CancelLines)] == cancels
    assert sorted(c.sku for c in again.commands) == sorted(c.sku for c in first.commands)
    # and as one the SKU stage committed in place (`committed`): only the cancels are sent
    committed = route_order(OrderState.from_dict(state.to_dict()), order, committed=True)
    assert committed.commands == cancels


def test_a_decision_redelivered_to_a_released_record_gives_the_hold_back() -> None:
    """A single-SKU request is held where its SKU lives, then released. A worker dies, and its SKU
    record comes back without the hold and the release (the release's command handled before the
    redelivered request, on another topic): the SKU holds again and tells the record `held` with
    the request's own time. The record is released: the hold must go back, not be taken for a
    redelivery of the decision it already has (bench/faults.py: a 201 released, then held)."""
    state, _ = start(two_sku_request(), catalog())
    state.lines, state.waiting = state.lines[:1], []
    state.held, state.status = {"A": [("wh", 2)]}, HELD
    decided = state.to_dict()  # the SKU's decision, as the command carries it
    kept, _ = on_decided(None, ReservationState.from_dict(decided))
    on_release(kept, ev("reservation-released", 5, reservation_id="r"))  # type: ignore[arg-type]
    assert kept.status == RELEASED
    again, releases = on_decided(kept, ReservationState.from_dict(decided))
    assert again is kept and again.status == RELEASED
    assert [(r.sku, r.reservation_id, r.reason) for r in releases] == [("A", "r", RELEASED)]
    # the same decision reaching a record that is still held changes nothing, as before
    held_record = ReservationState.from_dict(decided)
    assert on_decided(held_record, ReservationState.from_dict(decided))[1] == []


def test_a_whole_order_cancel_that_reaches_the_sku_before_its_commitment_still_cancels_it() -> None:
    """bench/faults.py worker-kill on the embedded Kafka: a single-SKU order is committed in place
    by its SKU's worker, which forwards it to the order stage and is killed before its commit.
    The order stage, on the other worker, has the order now and sends the SKU the cancel that
    waited for it; the restarted SKU worker handles that cancel before the order comes round
    again. A whole-order cancel of a line the SKU did not know was skipped, and the line stayed
    committed for good (one unit, where simulate has none)."""
    cat = catalog()
    order = ev(
        "order-created",
        1,
        order_id="o",
        channel="web",
        lines=[{"line_id": "1", "sku": "A", "quantity": 1, "location": "wh"}],
    )
    cancel = ev("order-cancelled", 2, order_id="o")
    assert isinstance(order, OrderCreated) and isinstance(cancel, OrderCancelled)
    in_order, overtaken = SkuState("A"), SkuState("A")
    commit = commit_commands(order)[0]
    whole = CancelLines(cancel.event_id, cancel.occurred_at, "A", "o", (("1", None),))
    for state, commands in ((in_order, (commit, whole)), (overtaken, (whole, commit))):
        for command in commands:
            apply_sku(state, command, cat)
    assert in_order.location("wh").committed == 0
    assert overtaken.location("wh").committed == in_order.location("wh").committed
