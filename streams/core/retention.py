"""What the order and reservation records keep once their business is done: open business.

The SKU record forgets a picked or cancelled order line 7 days (business time) after its last
change, and a PO with nothing left to come as long after its last schedule or receipt
(streams.core.sku). The records of the other stages follow the same horizon, applied the same way
by every runner (simulate's engine, the live stages):

- an order's record forgets each line its SKU forgot, and goes with its last line;
- an order's record of cancels alone (its order never came) goes 7 days after them;
- a finished reservation (rejected, released, expired, confirmed) is cut down to a tombstone 7
  days after its expiry: its id, channel, status and times, so a request repeating the id still
  gets its status and holds nothing (SPEC §3 sets no horizon on that rule).

The sweeps run when the clock's date moves (stream time in simulate and replays, the worker's
clock live) and only ever touch records finished before the horizon, so what they forget can
change the outcome of an event only if it comes more than 7 days of business time late.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from streams.core.orders import OrderState
from streams.core.reservations import HELD, PENDING, ReservationState
from streams.core.sku import DEDUPE_HORIZON


def horizon_start(day: date) -> datetime:
    """What finished before this instant is forgotten on `day`: midnight, 7 days before."""
    return datetime.combine(day, time(), UTC) - DEDUPE_HORIZON


@dataclass(frozen=True, slots=True)
class LinesForgotten:
    """A SKU forgot these lines of one order: for the order's record (keyed by order id)."""

    order_id: str
    sku: str
    line_ids: tuple[str, ...]


def lines_forgotten(sku: str, forgotten: Iterable[tuple[str, str]]) -> list[LinesForgotten]:
    """A SKU's forgotten (order_id, line_id) pairs as one command per order, in order."""
    grouped: dict[str, list[str]] = {}
    for order_id, line_id in forgotten:
        grouped.setdefault(order_id, []).append(line_id)
    return [LinesForgotten(order_id, sku, tuple(ids)) for order_id, ids in grouped.items()]


def forget_lines(state: OrderState, forgotten: LinesForgotten) -> bool:
    """The SKU forgot these lines of the order: so does its record. True when the record has
    nothing left to remember (every line forgotten, no cancel waiting) and can go."""
    sku = forgotten.sku
    for line_id in forgotten.line_ids:
        if state.lines.get(line_id) == sku:
            del state.lines[line_id]
            for cancelled in state.whole.values():
                if line_id in cancelled:
                    cancelled.remove(line_id)  # a redelivered whole cancel has nothing left to do
    return state.created and not state.lines and not state.pending


def order_done(state: OrderState, since: datetime) -> bool:
    """A record of cancels whose order never came, the last of them before `since`."""
    return not state.created and all(at < since for _, at, _ in state.pending)


def compact_reservation(state: ReservationState, since: datetime) -> bool:
    """Cut a reservation finished and expired before `since` down to its tombstone; True when it
    changed (so it is written again)."""
    if state.status in (PENDING, HELD) or state.expires_at >= since:
        return False
    if not (state.lines or state.held or state.waiting or state.short or state.short_skus):
        return False  # a tombstone already
    state.lines, state.held, state.waiting = [], {}, []
    state.short, state.short_skus, state.release_requested = {}, {}, None
    return True
