"""The order stage: an order's record, keyed by order id, and the per-SKU commands of its events.

Idempotent: an order event seen again gives the commands it gave the first time (the same event
ids, so a SKU that has them ignores them). A record goes with its order's last line, and a record
of cancels whose order never came is forgotten past the retention horizon.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

from streams.core.models import OrderCancelled, OrderCreated
from streams.core.orders import OrderState, route_order
from streams.core.retention import LinesForgotten, forget_lines, order_done
from streams.stages.effects import Effects, Table

K = TypeVar("K")


def handle_order(
    table: Table[str, OrderState],
    event: OrderCreated | OrderCancelled,
    out: Effects,
    committed: bool = False,
) -> None:
    """An order event: its per-SKU commands, the confirmation of the reservation it names, and
    its alerts. `committed`: the SKU stage has committed the order's lines in place already."""
    state = table.get(event.order_id) or OrderState()
    if isinstance(event, OrderCreated) and not state.created:  # each order's lines once
        out.new_order = event
    routed = route_order(state, event, committed=committed)
    out.alerts.extend(routed.alerts)
    for command in routed.commands:
        out.commands.append((command.sku, command))
    if routed.confirmation is not None:
        out.commands.append((routed.confirmation.reservation_id, routed.confirmation))
    table.put(event.order_id, state)


def handle_forgotten(table: Table[str, OrderState], forgotten: LinesForgotten) -> None:
    """A SKU forgot lines of this order; the record goes with its last line."""
    state = table.get(forgotten.order_id)
    if state is None:
        return  # never known here, or gone already
    if forget_lines(state, forgotten):
        table.delete(forgotten.order_id)
    else:
        table.put(forgotten.order_id, state)


def forget_finished(table: Table[K, OrderState], keys: Iterable[K], since: datetime) -> None:
    """The records of cancels whose order never came, the last before `since`, forgotten."""
    for key in keys:
        state = table.get(key)
        if state is not None and order_done(state, since):
            table.delete(key)
