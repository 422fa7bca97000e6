"""An event against the catalog: `check_event` names what the catalog does not have, or None.

Pure and read-only. The topology, the reservation API, replay and simulate run it on each event
they take in, and turn its reason into a dead letter, a refusal or a rejected line.
"""

from __future__ import annotations

from streams.core.catalog import Catalog
from streams.core.models import Event, OrderCreated, ReservationRequested, SingleSkuEvent
from streams.core.reservations import plan
from streams.errors import InvalidEvent


def check_event(event: Event, catalog: Catalog) -> str | None:
    """A reason when the event names a location, channel or listing the catalog does not have."""
    locations = catalog.location_ids
    if isinstance(event, SingleSkuEvent):
        if event.location not in locations:
            return f"{event.type} {event.event_id}: unknown location {event.location!r}"
    elif isinstance(event, OrderCreated):
        if event.channel not in catalog.channel_by_id:
            return f"order-created {event.event_id}: unknown channel {event.channel!r}"
        for line in event.lines:
            if line.location is not None and line.location not in locations:
                return (
                    f"order-created {event.event_id}: line {line.line_id}: unknown location "
                    f"{line.location!r}"
                )
    elif isinstance(event, ReservationRequested):
        try:
            plan(event, catalog)
        except InvalidEvent as error:
            return error.reason
    return None
