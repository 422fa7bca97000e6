"""The SKU stage: a SKU's state, keyed by SKU, and what each command does to it and to the others.

Idempotent by event id: a command seen again changes nothing but has every position of its SKU
sent again (its outputs may have been lost with a crash). A SKU's records are derived once per
batch (derive), from its state as the batch left it, for the locations its commands changed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import date, datetime

from streams.core.catalog import Catalog
from streams.core.derive import location_ats_map, position, sku_availability
from streams.core.models import ReservationRequested
from streams.core.reservations import ReservationDecided, ReservationState, on_result, start
from streams.core.retention import lines_forgotten
from streams.core.sku import SkuCommand, SkuOutcome, TryHold, apply_sku
from streams.core.state import SkuState
from streams.errors import InvalidEvent
from streams.stages.effects import Effects
from streams.stages.listings import listing_key


def handle_sku(
    state: SkuState, command: SkuCommand, catalog: Catalog, out: Effects, answer: bool = True
) -> SkuOutcome:
    """One command against its SKU's state: the lines the SKU forgot to their orders (by order
    id), alerts, and a hold's answer to its reservation (by reservation id) unless not `answer`.
    The outcome's `touched` names the locations whose records go out: all of them on a
    duplicate."""
    outcome = apply_sku(state, command, catalog)
    if outcome.forgotten:  # lines the SKU forgot: their orders' records forget them too
        for forgotten in lines_forgotten(state.sku, outcome.forgotten):
            out.commands.append((forgotten.order_id, forgotten))
    if outcome.alerts:
        out.alerts.extend(outcome.alerts)
    if outcome.hold is not None and answer:
        out.commands.append((outcome.hold.reservation_id, outcome.hold))
    if outcome.duplicate:
        outcome.touched.update(state.locations)
    return outcome


def derive(
    state: SkuState,
    locations: Collection[str],
    as_of: datetime,
    cause: str,
    catalog: Catalog,
    out: Effects,
    today: date,
    force: bool = False,
    floor: int = 0,
) -> None:
    """A SKU's records since its last derivation: the positions of `locations` (of every location
    under a new catalog: safety stock may differ everywhere), in location order; the changed
    availability of its own listings (every one if `force`); its changed component values, to
    the listing stage (by listing). `floor` as position's and sku_availability's."""
    if state.catalog_version != catalog.version:
        locations = list(state.locations)
    ats = location_ats_map(state, catalog)
    for loc in sorted(locations) if len(locations) > 1 else locations:
        out.positions.append(position(state, loc, catalog, as_of, cause, ats, floor))
    records, updates = sku_availability(
        state, catalog, as_of, cause, force=force, ats=ats, floor=floor, today=today
    )
    if records:
        out.availability.extend(records)
    for update in updates:
        out.commands.append((listing_key(update), update))


def request_here(
    event: ReservationRequested,
    catalog: Catalog,
    now: datetime,
    lives_here: Callable[[str], bool],
) -> tuple[ReservationState, TryHold] | None:
    """A request whose every line is one SKU that `lives_here`: its record and its one hold, for
    its SKU to decide in one hop; None for the reservation stage (an invalid one included: it
    dead-letters it with its reason)."""
    try:
        state, tries = start(event, catalog, now)
    except InvalidEvent:
        return None
    if len(tries) != 1 or not lives_here(tries[0].sku):
        return None
    return state, tries[0]


def knows_request(state: SkuState, reservation_id: str) -> bool:
    """The SKU held or refused this id (until an hour past its expiry): a retried or redelivered
    request goes to the reservation stage, which answers with the reservation's status now."""
    return (
        reservation_id in state.holds
        or reservation_id in state.closed
        or reservation_id in state.refused
    )


def decided_here(request: ReservationState, outcome: SkuOutcome, out: Effects) -> None:
    """A request its SKU decided (`outcome`: its hold, not answered): the record to the
    reservation stage first, so a release the caller sends on reading the decision comes after
    it, then the decision."""
    assert outcome.hold is not None
    on_result(request, outcome.hold)
    out.commands.append((request.reservation_id, ReservationDecided(request)))
    out.decisions.append(request)
    out.decided = request.status
