"""Output records derived from state: positions, availability, and component values for bundles.

Availability is emitted only when its value changes, and each emission takes the next version
of its key from the same state record, so versions strictly increase per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from streams.core.catalog import Catalog
from streams.core.formulas import (
    channel_ats,
    listing_available,
    listing_backorder,
    location_ats,
    sku_backorder,
)
from streams.core.models import Availability, Position, trusted
from streams.core.state import Published, SkuState


@dataclass(frozen=True, slots=True)
class ComponentUpdate:
    """One component SKU's channel values, sent to the stage that owns a multi-SKU listing."""

    channel: str
    channel_sku: str
    sku: str
    seq: int  # increases per (listing, sku): an older update is ignored
    channel_ats: int
    backorder_units: int
    backorder_eta: date | None
    as_of: datetime
    cause_event_id: str
    catalog_version: int = 0  # the catalog it was derived under: the listing stage catches up to it


def expects_inbound(state: SkuState) -> bool:
    """Whether any location of the SKU expects units of a PO: what a new clock date can change."""
    for loc in state.locations.values():
        for inbound in loc.inbound.values():
            if inbound.quantity > 0:
                return True
    return False


def location_ats_map(state: SkuState, catalog: Catalog) -> dict[str, int]:
    safety = catalog.safety_by_sku.get(state.sku)
    if not safety:
        return {
            loc: stock.sellable.qty - stock.reserved - stock.committed
            for loc, stock in state.locations.items()
        }
    return {
        loc: stock.sellable.qty - stock.reserved - stock.committed - safety.get(loc, 0)
        for loc, stock in state.locations.items()
    }


def position(
    state: SkuState,
    loc_id: str,
    catalog: Catalog,
    as_of: datetime,
    cause: str,
    ats: dict[str, int] | None = None,
    floor: int = 0,
) -> Position:
    loc = state.location(loc_id)  # its version changes: noted (SkuState.locations_changed)
    version = loc.version + 1
    if version < floor:
        version = floor
    loc.version = version
    safety = catalog.safety_by_sku.get(state.sku)
    safety_stock = safety.get(loc_id, 0) if safety else 0
    on_hand = loc.sellable.qty
    incoming = 0
    for inbound in loc.inbound.values():
        incoming += inbound.quantity
    return trusted(
        Position,
        sku=state.sku,
        location=loc_id,
        on_hand=on_hand,
        reserved=loc.reserved,
        committed=loc.committed,
        damaged=loc.damaged.qty,
        quarantine=loc.quarantine.qty,
        incoming=incoming,
        safety_stock=safety_stock,
        location_ats=(
            ats[loc_id]
            if ats is not None
            else location_ats(on_hand, loc.reserved, loc.committed, safety_stock)
        ),
        version=version,
        as_of=as_of,
        cause_event_id=cause,
    )


def sku_availability(
    state: SkuState,
    catalog: Catalog,
    as_of: datetime,
    cause: str,
    channels: set[str] | None = None,
    force: bool = False,
    ats: dict[str, int] | None = None,
    floor: int = 0,
    today: date | None = None,
) -> tuple[list[Availability], list[ComponentUpdate]]:
    """Changed availability of this SKU's own listings, and changed component values for bundles.

    `today` is the clock's date backorders are counted from (SPEC §3: stream time in simulate and
    replays, wall time live); when not given, the date of `as_of`.

    `force` re-sends every value under a new version: after a redelivery, the record that the first
    delivery produced may have been lost with the worker. Under a catalog other than the one the
    SKU was last derived under, listings it no longer has get one zero, and the component values
    are all sent again (a bundle's recipe may have changed while its components did not; the
    listing stage publishes only what changed). `floor` is the smallest version to use:
    live stages pass the wall clock in microseconds, so a state recovered after a crash (which may
    be older than records already sent) still issues versions above every one sent before.
    """
    records: list[Availability] = []
    updates: list[ComponentUpdate] = []
    refresh = state.catalog_version != catalog.version
    if refresh:
        _retire_listings(state, catalog, as_of, cause, floor, records, updates)
        state.catalog_version = catalog.version
    plans = catalog.plans.get(state.sku)
    if not plans:
        return records, updates
    if ats is None:
        ats = location_ats_map(state, catalog)
    published = state.published
    # (channel ats, backorder units, backorder eta) per channel, computed once per derive
    per_channel: dict[str, tuple[int, int, date | None]] = {}
    for listing, channel, local, per_unit, key in plans:
        channel_id = channel.id
        if channels is not None and channel_id not in channels:
            continue
        values = per_channel.get(channel_id)
        if values is None:
            network = 0
            for loc in channel.locations:
                value = ats.get(loc, 0)
                if value > 0:
                    network += value
            if channel.backorder_horizon_days > 0:
                if today is None:
                    today = as_of.date()
                bo_units, bo_eta = sku_backorder(state, channel, today)
            else:
                bo_units, bo_eta = 0, None
            values = per_channel[channel_id] = (
                channel_ats(network, channel.allocation_percent, channel.buffer_units),
                bo_units,
                bo_eta,
            )
        chan_ats, bo_units, bo_eta = values
        if local:
            a = chan_ats // per_unit
            b = bo_units // per_unit
            d = bo_eta if b > 0 else None
        else:
            a, b, d = chan_ats, bo_units, bo_eta
        # the next version when the value differs from the last one published under key (inlined
        # on the hot path: most derives change nothing for most listings)
        prev = published.get(key)
        if prev is None:
            version = floor if floor > 1 else 1
            published[key] = Published(a, b, d, version)
        elif (
            force
            or (refresh and not local)
            or prev.available != a
            or prev.backorderable != b
            or prev.restock_date != d
        ):
            version = prev.version + 1
            if version < floor:
                version = floor
            prev.available, prev.backorderable, prev.restock_date = a, b, d
            prev.version = version
        else:
            continue
        if local:
            records.append(
                availability_record(channel_id, listing.channel_sku, a, b, d, version, as_of, cause)
            )
        else:
            updates.append(
                ComponentUpdate(
                    channel_id,
                    listing.channel_sku,
                    state.sku,
                    version,
                    a,
                    b,
                    d,
                    as_of,
                    cause,
                    catalog.version,
                )
            )
    return records, updates


def _retire_listings(
    state: SkuState,
    catalog: Catalog,
    as_of: datetime,
    cause: str,
    floor: int,
    records: list[Availability],
    updates: list[ComponentUpdate],
) -> None:
    """Zero availability for what this SKU published under listings the catalog no longer has.

    A channel must stop selling a listing that was removed; the zero is published once, and a
    listing added back later continues its versions from there.
    """
    planned = {plan.published_key for plan in catalog.plans.get(state.sku, ())}
    for key, prev in list(state.published.items()):
        if key in planned or (prev.available == 0 and prev.backorderable == 0):
            continue
        channel, _, channel_sku = key.partition("/")
        component = channel_sku.endswith(f"#{state.sku}")
        if component:
            channel_sku = channel_sku[: -len(state.sku) - 1]
        version = max(prev.version + 1, floor)
        state.published[key] = Published(0, 0, None, version)
        if component:
            updates.append(
                ComponentUpdate(
                    channel,
                    channel_sku,
                    state.sku,
                    version,
                    0,
                    0,
                    None,
                    as_of,
                    cause,
                    catalog.version,
                )
            )
        else:
            records.append(
                availability_record(channel, channel_sku, 0, 0, None, version, as_of, cause)
            )


# ---- the stage that owns multi-SKU listings (bundles, kits) ------------------------------------


@dataclass(slots=True)
class ListingState:
    components: dict[str, tuple[int, int, int, date | None]]  # sku -> (seq, ats, bo units, eta)
    published: Published | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "c": {
                k: [s, a, b, e.toordinal() if e else None]
                for k, (s, a, b, e) in self.components.items()
            },
            "p": self.published.to_dict() if self.published else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ListingState:
        comps = data["c"]
        pub = data["p"]
        assert isinstance(comps, dict)
        return cls(
            {
                k: (s, a, b, date.fromordinal(e) if e is not None else None)
                for k, (s, a, b, e) in comps.items()
            },
            Published.from_dict(pub) if isinstance(pub, list) else None,
        )


def apply_component(
    state: ListingState,
    update: ComponentUpdate,
    catalog: Catalog,
    floor: int = 0,
    force: bool = False,
) -> Availability | None:
    """Fold one component's values into its listing; the new record when availability changed,
    or with `force` (a record that may be older than what a dead worker sent) whenever the value
    is not an older one."""
    known = state.components.get(update.sku)
    if known is not None and known[0] >= update.seq:
        if known[0] == update.seq and state.published is not None:
            # redelivered: what it published may have been lost with a worker that died after
            # writing this state, so it goes out again, under a new version
            return _republish(state, update, floor)
        return None  # an older value
    state.components[update.sku] = (
        update.seq,
        update.channel_ats,
        update.backorder_units,
        update.backorder_eta,
    )
    record = listing_record(
        state,
        update.channel,
        update.channel_sku,
        catalog,
        update.as_of,
        update.cause_event_id,
        floor,
    )
    if record is None and force and state.published is not None:
        return _republish(state, update, floor)
    return record


def listing_record(
    state: ListingState,
    channel: str,
    channel_sku: str,
    catalog: Catalog,
    as_of: datetime,
    cause: str,
    floor: int = 0,
) -> Availability | None:
    listing = catalog.listing_by_key.get((channel, channel_sku))
    if listing is None:  # removed from the catalog: the channel must stop selling it
        available, backorderable, restock = 0, 0, None
    else:
        ats = {sku: v[1] for sku, v in state.components.items()}
        bos = {sku: (v[2], v[3]) for sku, v in state.components.items()}
        available = listing_available(listing, ats)
        backorderable, restock = listing_backorder(listing, bos)
    prev = state.published
    if listing is None and prev is None:
        return None
    if prev is not None and (prev.available, prev.backorderable, prev.restock_date) == (
        available,
        backorderable,
        restock,
    ):
        return None
    version = max(prev.version + 1 if prev else 1, floor)
    state.published = Published(available, backorderable, restock, version)
    return availability_record(
        channel, channel_sku, available, backorderable, restock, version, as_of, cause
    )


def _republish(state: ListingState, update: ComponentUpdate, floor: int) -> Availability:
    published = state.published
    assert published is not None
    published.version = max(published.version + 1, floor)
    return availability_record(
        update.channel,
        update.channel_sku,
        published.available,
        published.backorderable,
        published.restock_date,
        published.version,
        update.as_of,
        update.cause_event_id,
    )


def availability_record(
    channel: str,
    channel_sku: str,
    available: int,
    backorderable: int,
    restock: date | None,
    version: int,
    as_of: datetime,
    cause: str,
) -> Availability:
    return trusted(
        Availability,
        channel=channel,
        channel_sku=channel_sku,
        available=available,
        backorderable=backorderable,
        restock_date=restock,
        version=version,
        as_of=as_of,
        cause_event_id=cause,
    )
