"""Record keys: one function decides how every event is keyed on `inventory.events`.

Every producer we own keys its events through it.
"""

from __future__ import annotations

from streams.core.models import (
    Event,
    OrderCancelled,
    OrderCreated,
    ReservationExpired,
    ReservationReleased,
    ReservationRequested,
)


def event_key(event: Event) -> str:
    """The SKU for single-SKU events; the order or reservation id for events split per SKU."""
    if isinstance(event, OrderCreated | OrderCancelled):
        return event.order_id
    if isinstance(event, ReservationRequested | ReservationReleased | ReservationExpired):
        return event.reservation_id
    return event.sku


def position_key(sku: str, location: str) -> str:
    return f"{sku}|{location}"
