"""The reservation stage: a request's record, keyed by reservation id, from request to decision.

Idempotent by reservation id: a request seen again is decided again with the record's status and
holds nothing more (only the holds of a pending record that were never answered are tried
again). Once decided, every later record for the id tells the decision again, as a redelivered
record's outputs are sent again: the record can be on the changelog and its decision lost with a
crash. A release or expiry that overtakes its request is remembered, so the request is not held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

from streams.core.catalog import Catalog
from streams.core.models import ReservationExpired, ReservationReleased, ReservationRequested
from streams.core.orders import Confirmation
from streams.core.reservations import (
    PENDING,
    ReservationDecided,
    ReservationState,
    closed_before_requested,
    on_confirmed,
    on_decided,
    on_release,
    on_result,
    resume,
    start,
)
from streams.core.retention import compact_reservation
from streams.core.sku import HoldResult, ReleaseHold
from streams.errors import InvalidEvent
from streams.stages.effects import DeadLetter, Effects, Table

K = TypeVar("K")

# what the stage takes: the request's events, the SKUs' answers, an order's confirmation, and a
# single-SKU request decided where its SKU lives
ReservationInput = (
    ReservationRequested
    | ReservationReleased
    | ReservationExpired
    | HoldResult
    | Confirmation
    | ReservationDecided
)


def handle_reservation(
    table: Table[str, ReservationState],
    item: ReservationInput,
    catalog: Catalog,
    now: Callable[[], datetime],
    out: Effects,
) -> None:
    """One record for a reservation; `now` is the clock a new request is decided at."""
    if isinstance(item, ReservationDecided):
        _decided_elsewhere(table, item.state, out)
    elif isinstance(item, ReservationRequested):
        _requested(table, item, catalog, now, out)
    else:
        _answered(table, item, out)


def _decided_elsewhere(
    table: Table[str, ReservationState], decided: ReservationState, out: Effects
) -> None:
    known = table.get(decided.reservation_id)
    kept, releases = on_decided(known, decided)
    _release(releases, out)
    if releases:
        out.decisions.append(kept)  # the record's status stands: the caller is told again
    if kept is not known:
        table.put(decided.reservation_id, kept)


def _requested(
    table: Table[str, ReservationState],
    event: ReservationRequested,
    catalog: Catalog,
    now: Callable[[], datetime],
    out: Effects,
) -> None:
    known = table.get(event.reservation_id)
    if known is not None:  # idempotent by reservation id
        if known.status != PENDING:
            out.decisions.append(known)  # a retried request gets the same answer again
        for hold in resume(known, event, catalog):  # lost with a crash, maybe
            out.commands.append((hold.sku, hold))
        return
    try:
        state, tries = start(event, catalog, now())
    except InvalidEvent as error:
        out.dead_letters.append(DeadLetter(error.reason, event.source))
        return
    for hold in tries:
        out.commands.append((hold.sku, hold))
    if state.status != PENDING:  # decided at once: too late to hold
        out.decisions.append(state)
        out.decided = state.status
    table.put(event.reservation_id, state)


def _answered(
    table: Table[str, ReservationState],
    item: ReservationReleased | ReservationExpired | HoldResult | Confirmation,
    out: Effects,
) -> None:
    rid = item.reservation_id
    state = table.get(rid)
    if state is None:
        if isinstance(item, ReservationReleased | ReservationExpired):
            table.put(rid, closed_before_requested(item))
        return  # nothing was ever held under this id
    releases: list[ReleaseHold] = []
    if isinstance(item, HoldResult):
        status_before = state.status
        releases = on_result(state, item)
        if status_before == PENDING and state.status != PENDING:
            out.decided = state.status
    elif isinstance(item, Confirmation):
        releases = on_confirmed(state, item.skus)
    else:
        releases = on_release(state, item)
    _release(releases, out)
    if state.status != PENDING:
        # decided, now or before: told again, as a redelivered record's outputs are sent again
        # (the record can be in the changelog and its decision lost with a crash)
        out.decisions.append(state)
    table.put(rid, state)


def _release(releases: list[ReleaseHold], out: Effects) -> None:
    for release in releases:
        out.commands.append((release.sku, release))


def compact_finished(table: Table[K, ReservationState], keys: Iterable[K], since: datetime) -> None:
    """The records finished and expired before `since`, cut down to their tombstones."""
    for key in keys:
        state = table.get(key)
        if state is not None and compact_reservation(state, since):
            table.put(key, state)
