"""Output records derived from state: positions, availability, and component values for bundles.

Availability is emitted only when its value changes, and each emission takes the next version
of its key from the same state record, so versions strictly increase per key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from streams.core.catalog import Catalog, Listing
from streams.core.formulas import (
    channel_ats,
    listing_available,
    listing_backorder,
    sku_backorder,
    sku_location_ats,
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


def location_ats_map(state: SkuState, catalog: Catalog) -> dict[str, int]:
    safety = catalog.safety
    sku = state.sku
    return {
        loc: stock.sellable.qty - stock.reserved - stock.committed - safety.get((sku, loc), 0)
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
    loc = state.locations[loc_id]
    loc.version = max(loc.version + 1, floor)
    return trusted(
        Position,
        sku=state.sku,
        location=loc_id,
        on_hand=loc.sellable.qty,
        reserved=loc.reserved,
        committed=loc.committed,
        damaged=loc.damaged.qty,
        quarantine=loc.quarantine.qty,
        incoming=loc.incoming,
        safety_stock=catalog.safety.get((state.sku, loc_id), 0),
        location_ats=(
            ats[loc_id] if ats is not None else sku_location_ats(state, loc_id, loc, catalog)
        ),
        version=loc.version,
        as_of=as_of,
        cause_event_id=cause,
    )


def is_local(listing: Listing) -> bool:
    """A listing whose components are all one SKU is computed where that SKU lives."""
    first = listing.components[0].sku
    return all(c.sku == first for c in listing.components)


def sku_availability(
    state: SkuState,
    catalog: Catalog,
    as_of: datetime,
    cause: str,
    channels: set[str] | None = None,
    force: bool = False,
    ats: dict[str, int] | None = None,
    floor: int = 0,
    refresh_components: bool = False,
) -> tuple[list[Availability], list[ComponentUpdate]]:
    """Changed availability of this SKU's own listings, and changed component values for bundles.

    `force` re-sends every value under a new version: after a redelivery, the record that the first
    delivery produced may have been lost with the worker. `refresh_components` re-sends only the
    component values (a new catalog may have changed a bundle whose components did not change;
    the listing stage publishes only what changed). `floor` is the smallest version to use:
    live stages pass the wall clock in microseconds, so a state recovered after a crash (which may
    be older than records already sent) still issues versions above every one sent before.
    """
    records: list[Availability] = []
    updates: list[ComponentUpdate] = []
    plans = catalog.plans.get(state.sku)
    if not plans:
        return records, updates
    if ats is None:
        ats = location_ats_map(state, catalog)
    per_channel: dict[str, tuple[int, int, date | None]] = {}
    today = as_of.date()
    for listing, channel, local, per_unit in plans:
        if channels is not None and channel.id not in channels:
            continue
        values = per_channel.get(channel.id)
        if values is None:
            network = 0
            for loc in channel.locations:
                value = ats.get(loc, 0)
                if value > 0:
                    network += value
            bo_units, bo_eta = sku_backorder(state, channel, today)
            values = per_channel[channel.id] = (
                channel_ats(network, channel.allocation_percent, channel.buffer_units),
                bo_units,
                bo_eta,
            )
        chan_ats, bo_units, bo_eta = values
        if local:
            available = chan_ats // per_unit
            backorderable = bo_units // per_unit
            restock = bo_eta if backorderable > 0 else None
            version = _changed(
                state,
                f"{channel.id}/{listing.channel_sku}",
                available,
                backorderable,
                restock,
                force,
                floor,
            )
            if version:
                records.append(
                    trusted(
                        Availability,
                        channel=channel.id,
                        channel_sku=listing.channel_sku,
                        available=available,
                        backorderable=backorderable,
                        restock_date=restock,
                        version=version,
                        as_of=as_of,
                        cause_event_id=cause,
                    )
                )
        else:
            seq = _changed(
                state,
                f"{channel.id}/{listing.channel_sku}#{state.sku}",
                chan_ats,
                bo_units,
                bo_eta,
                force or refresh_components,
                floor,
            )
            if seq:
                updates.append(
                    ComponentUpdate(
                        channel.id,
                        listing.channel_sku,
                        state.sku,
                        seq,
                        chan_ats,
                        bo_units,
                        bo_eta,
                        as_of,
                        cause,
                        catalog.version,
                    )
                )
    return records, updates


def retire_listings(
    state: SkuState, catalog: Catalog, as_of: datetime, cause: str, floor: int = 0
) -> tuple[list[Availability], list[ComponentUpdate]]:
    """Zero availability for what this SKU published under listings the catalog no longer has.

    A channel must stop selling a listing that was removed; the zero is published once, and a
    listing added back later continues its versions from there.
    """
    records: list[Availability] = []
    updates: list[ComponentUpdate] = []
    planned = set()
    for listing, planned_channel, local, _ in catalog.plans.get(state.sku, ()):
        suffix = "" if local else f"#{state.sku}"
        planned.add(f"{planned_channel.id}/{listing.channel_sku}{suffix}")
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
                trusted(
                    Availability,
                    channel=channel,
                    channel_sku=channel_sku,
                    available=0,
                    backorderable=0,
                    restock_date=None,
                    version=version,
                    as_of=as_of,
                    cause_event_id=cause,
                )
            )
    return records, updates


def _changed(
    state: SkuState, key: str, a: int, b: int, d: date | None, force: bool, floor: int
) -> int:
    """The new version when (a, b, d) differs from what was last published under key, else 0."""
    prev = state.published.get(key)
    if (
        not force
        and prev is not None
        and prev.available == a
        and prev.backorderable == b
        and prev.restock_date == d
    ):
        return 0
    version = max(prev.version + 1 if prev else 1, floor)
    state.published[key] = Published(a, b, d, version)
    return version


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
    state: ListingState, update: ComponentUpdate, catalog: Catalog, floor: int = 0
) -> Availability | None:
    """Fold one component's values into its listing; the new record when availability changed."""
    known = state.components.get(update.sku)
    if known is not None and known[0] >= update.seq:
        return None  # a redelivered or older value
    state.components[update.sku] = (
        update.seq,
        update.channel_ats,
        update.backorder_units,
        update.backorder_eta,
    )
    return listing_record(
        state,
        update.channel,
        update.channel_sku,
        catalog,
        update.as_of,
        update.cause_event_id,
        floor,
    )


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
