"""The SPEC §3 formulas as small pure functions over integers: no state is changed here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta

from streams.core.catalog import Catalog, Channel, Listing
from streams.core.state import LocationState, SkuState


def location_ats(on_hand: int, reserved: int, committed: int, safety_stock: int) -> int:
    """May be negative: negative means oversold."""
    return on_hand - reserved - committed - safety_stock


def network_ats(location_values: Iterable[int]) -> int:
    return sum(v for v in location_values if v > 0)


def channel_ats(network: int, allocation_percent: int, buffer_units: int) -> int:
    return max(0, network * allocation_percent // 100 - buffer_units)


def listing_available(listing: Listing, per_sku: Mapping[str, int]) -> int:
    """min over components of floor(units of the component / units per listing unit)."""
    return min(per_sku.get(c.sku, 0) // c.quantity for c in listing.components)


def sku_location_ats(state: SkuState, loc: str, loc_state: LocationState, catalog: Catalog) -> int:
    safety = catalog.safety.get((state.sku, loc), 0)
    return location_ats(loc_state.sellable.qty, loc_state.reserved, loc_state.committed, safety)


def sku_backorder(state: SkuState, channel: Channel, as_of: date) -> tuple[int, date | None]:
    """Units expected within the channel's horizon (channel formula), and the earliest eta."""
    days = channel.backorder_horizon_days
    if days <= 0:
        return 0, None
    horizon: date | None = None
    total = 0
    earliest: date | None = None
    locations = state.locations
    for loc in channel.locations:
        loc_state = locations.get(loc)
        if loc_state is None or not loc_state.inbound:
            continue
        if horizon is None:
            horizon = as_of + timedelta(days=days)
        for inbound in loc_state.inbound.values():
            if inbound.quantity > 0 and inbound.eta is not None and inbound.eta <= horizon:
                total += inbound.quantity
                if earliest is None or inbound.eta < earliest:
                    earliest = inbound.eta
    if not total:
        return 0, None  # nothing expected: what channel_ats(0, ...) gives
    units = channel_ats(total, channel.allocation_percent, channel.buffer_units)
    return units, (earliest if units > 0 else None)


def listing_backorder(
    listing: Listing, per_sku: Mapping[str, tuple[int, date | None]]
) -> tuple[int, date | None]:
    """Backorderable units of a listing and its restock date: when its last component arrives."""
    units = min(per_sku.get(c.sku, (0, None))[0] // c.quantity for c in listing.components)
    if units <= 0:
        return 0, None
    dates = [per_sku[c.sku][1] for c in listing.components]
    return units, max(d for d in dates if d is not None)
