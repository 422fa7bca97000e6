"""Record keys: one function decides how every event is keyed on `inventory.events`.

Every producer we own keys its events through it. SPEC §5 keys the topic by SKU: events that name
SKUs are keyed by their (first) SKU, so a single-SKU order or reservation arrives where that SKU
lives and a reservation is decided there in one hop. Cancels and releases name no SKU: they are
keyed by their order or reservation id, and the stages route them.
"""

from __future__ import annotations

from streams.core.catalog import Catalog
from streams.core.models import (
    Event,
    OrderCancelled,
    OrderCreated,
    ReservationExpired,
    ReservationReleased,
    ReservationRequested,
)


def event_key(event: Event, catalog: Catalog | None = None) -> str:
    """The event's SKU (an order's or reservation's first); the order or reservation id for events
    that name no SKU. A reservation line naming a listing resolves through `catalog` when given."""
    if isinstance(event, OrderCreated):
        return event.lines[0].sku
    if isinstance(event, ReservationRequested):
        line = event.lines[0]
        if line.sku:
            return line.sku
        listing = (
            catalog.listing_by_key.get((event.channel, line.channel_sku or "")) if catalog else None
        )
        return listing.components[0].sku if listing else event.reservation_id
    if isinstance(event, OrderCancelled):
        return event.order_id
    if isinstance(event, ReservationReleased | ReservationExpired):
        return event.reservation_id
    return event.sku


def position_key(sku: str, location: str) -> str:
    return f"{sku}|{location}"
