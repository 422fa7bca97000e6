"""Order routing: splits order events per SKU, keeping each order's lines so a cancel finds them.

Idempotent by construction: routing the same event twice yields the same per-SKU commands with the
same event id, which the SKUs ignore the second time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.core.models import Alert, OrderCancelled, OrderCreated, OrderLine
from streams.core.sku import CancelLines, CommitLines, SkuCommand, make_alert
from streams.core.state import from_us, to_us

# cancels by (event id, occurred_at, (line id, quantity) or None for the whole order)
Cancels = list[tuple[str, datetime, list[tuple[str, int]] | None]]


@dataclass(slots=True)
class OrderState:
    lines: dict[str, str] = field(default_factory=dict)  # line_id -> sku
    created: bool = False
    # cancels that arrived before their order: (event_id, occurred_at, lines or None for all)
    pending: Cancels = field(default_factory=list)
    # whole-order cancels -> the lines they cancelled: a redelivery cancels those, not lines the
    # order gained since (an order created again with more lines)
    whole: dict[str, list[str]] = field(default_factory=dict)
    # the cancels that came before the order, applied when it came: a redelivered order sends
    # them again, as the record no longer has them pending
    early: Cancels = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "l": self.lines,
            "c": self.created,
            "p": _cancels_to_list(self.pending),
            "w": self.whole,
        }
        if self.early:
            data["e"] = _cancels_to_list(self.early)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OrderState:
        return cls(
            dict(data["l"]),
            data["c"],
            _cancels_from_list(data["p"]),
            dict(data.get("w", {})),
            _cancels_from_list(data.get("e", ())),
        )


def _cancels_to_list(cancels: Cancels) -> list[list[Any]]:
    return [[e, to_us(t), lines] for e, t, lines in cancels]


def _cancels_from_list(data: Any) -> Cancels:
    return [
        (e, from_us(t), [tuple(x) for x in lines] if lines is not None else None)
        for e, t, lines in data
    ]


@dataclass(frozen=True, slots=True)
class Confirmation:
    """An order that names a reservation: the hold becomes a commitment."""

    reservation_id: str
    order_id: str
    event_id: str
    skus: tuple[str, ...] = ()  # the order's SKUs: what the hold has on others is released


@dataclass(slots=True)
class Routed:
    commands: list[SkuCommand] = field(default_factory=list)
    confirmation: Confirmation | None = None
    alerts: list[Alert] = field(default_factory=list)


def route_order(
    state: OrderState, event: OrderCreated | OrderCancelled, committed: bool = False
) -> Routed:
    """The per-SKU commands of an order event. `committed`: the SKUs already have the order's
    lines (the SKU stage applied an order whose SKUs all live on its partition), so only the
    order's record, its pending cancels and its confirmation are left to do."""
    if isinstance(event, OrderCreated):
        return _created(state, event, committed)
    return _cancelled(state, event)


def commit_commands(e: OrderCreated) -> list[CommitLines]:
    """One CommitLines per SKU of the order, its lines in order."""
    by_sku: dict[str, list[OrderLine]] = defaultdict(list)
    for line in e.lines:
        by_sku[line.sku].append(line)
    return [
        CommitLines(
            e.event_id, e.occurred_at, sku, e.order_id, e.channel, e.reservation_id, tuple(lines)
        )
        for sku, lines in by_sku.items()
    ]


def _created(state: OrderState, e: OrderCreated, committed: bool) -> Routed:
    out = Routed()
    for line in e.lines:
        state.lines.setdefault(line.line_id, line.sku)
    state.created = True
    if not committed:
        out.commands.extend(commit_commands(e))
    if e.reservation_id:
        skus = tuple(sorted({line.sku for line in e.lines}))
        out.confirmation = Confirmation(e.reservation_id, e.order_id, e.event_id, skus)
    # the cancels that came first: those applied at an earlier routing of the order again (each
    # idempotent at its SKU by event id; its alerts were raised then), then the pending ones
    for event_id, at, cancelled in state.early:
        again = _cancel_commands(state, event_id, at, e.order_id, cancelled, Routed())
        out.commands.extend(again)
    for event_id, at, cancelled in state.pending:
        out.commands.extend(_cancel_commands(state, event_id, at, e.order_id, cancelled, out))
    state.early += state.pending
    state.pending = []
    return out


def _cancelled(state: OrderState, e: OrderCancelled) -> Routed:
    lines = [(c.line_id, c.quantity) for c in e.lines] if e.lines else None
    if not state.created:
        if all(p[0] != e.event_id for p in state.pending):
            state.pending.append((e.event_id, e.occurred_at, lines))
        return Routed()
    out = Routed()
    out.commands = _cancel_commands(state, e.event_id, e.occurred_at, e.order_id, lines, out)
    return out


def _cancel_commands(
    state: OrderState,
    event_id: str,
    at: datetime,
    order_id: str,
    lines: list[tuple[str, int]] | None,
    out: Routed,
) -> list[SkuCommand]:
    """The per-SKU cancels of the lines the order has; an `unknown-line` alert names the others."""
    by_sku: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    unknown: list[str] = []
    if lines is None:
        cancelled = state.whole.setdefault(event_id, list(state.lines))
        for line_id in cancelled:
            by_sku[state.lines[line_id]].append((line_id, None))
    else:
        for line_id, quantity in lines:
            line_sku = state.lines.get(line_id)
            if line_sku is not None:
                by_sku[line_sku].append((line_id, quantity))
            else:
                unknown.append(line_id)
    if unknown:
        # keyed by the order's first SKU: inventory.alerts is keyed by SKU, the line names none
        sku = next(iter(state.lines.values()), "")
        out.alerts.append(
            make_alert(
                "unknown-line",
                event_id,
                sku,
                None,
                f"order-cancelled {event_id}: order {order_id} has no line "
                f"{', '.join(unknown)}; its other lines were cancelled",
                at,
                ids=[event_id, order_id, *unknown],
            )
        )
    return [CancelLines(event_id, at, sku, order_id, tuple(items)) for sku, items in by_sku.items()]
