"""The catalog of SPEC §4 as a validated, immutable value, the core's lookups precomputed."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from streams.errors import InvalidCatalog


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Location(_Model):
    id: Annotated[str, Field(min_length=1)]


class Channel(_Model):
    model_config = ConfigDict(frozen=True, extra="allow")  # connector settings ride along

    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    type: str = "webhook"
    locations: Annotated[list[str], Field(min_length=1)]
    allocation_percent: Annotated[int, Field(ge=0, le=100)] = 100
    buffer_units: Annotated[int, Field(ge=0)] = 0
    backorder_horizon_days: Annotated[int, Field(ge=0)] = 0


class SafetyStock(_Model):
    sku: str
    location: str
    units: Annotated[int, Field(ge=0)]


# A catalog's listings are most of what a worker holds of it: one per channel and SKU, 200,000 for
# a 1,000,000-position catalog. As slotted dataclasses (validated by pydantic all the same) a
# listing with its component takes ~360 bytes against ~1,150 as models, which carry a __dict__
# and a set of the fields given.
_LISTING_CONFIG = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True, config=_LISTING_CONFIG)
class Component:
    sku: str
    quantity: Annotated[int, Field(gt=0)]


@dataclass(frozen=True, slots=True, config=_LISTING_CONFIG)
class Listing:
    channel: str
    channel_sku: str
    components: Annotated[list[Component], Field(min_length=1)]


class Catalog(_Model):
    version: int = 0
    locations: list[Location] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=list)
    safety_stock: list[SafetyStock] = Field(default_factory=list)
    listings: list[Listing] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        locations = {loc.id for loc in self.locations}
        channels = {ch.id for ch in self.channels}
        for ch in self.channels:
            unknown = [loc for loc in ch.locations if loc not in locations]
            if unknown:
                raise ValueError(f"channel {ch.id}: unknown locations {unknown}")
        for ss in self.safety_stock:
            if ss.location not in locations:
                raise ValueError(f"safety_stock {ss.sku}: unknown location {ss.location}")
        seen: set[tuple[str, str]] = set()
        for listing in self.listings:
            if listing.channel not in channels:
                raise ValueError(
                    f"listing {listing.channel_sku}: unknown channel {listing.channel}"
                )
            key = (listing.channel, listing.channel_sku)
            if key in seen:
                raise ValueError(
                    f"listing {listing.channel_sku} appears twice on {listing.channel}"
                )
            seen.add(key)
        return self

    # ---- lookups, computed once per catalog value ----

    @cached_property
    def location_ids(self) -> frozenset[str]:
        return frozenset(loc.id for loc in self.locations)

    @cached_property
    def channel_by_id(self) -> dict[str, Channel]:
        return {ch.id: ch for ch in self.channels}

    @cached_property
    def safety(self) -> dict[tuple[str, str], int]:
        return {(ss.sku, ss.location): ss.units for ss in self.safety_stock}

    @cached_property
    def safety_by_sku(self) -> dict[str, dict[str, int]]:
        """Safety stock per SKU then location: the derive hot path looks up one small dict."""
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for ss in self.safety_stock:
            out[ss.sku][ss.location] = ss.units
        return dict(out)

    @cached_property
    def listing_by_key(self) -> dict[tuple[str, str], Listing]:
        return {(li.channel, li.channel_sku): li for li in self.listings}

    @cached_property
    def listings_by_sku(self) -> dict[str, tuple[Listing, ...]]:
        """Every listing that has `sku` among its components."""
        out: dict[str, list[Listing]] = defaultdict(list)
        for listing in self.listings:
            for sku in {c.sku for c in listing.components}:
                out[sku].append(listing)
        return {sku: tuple(items) for sku, items in out.items()}

    @cached_property
    def plans(self) -> dict[str, tuple[ListingPlan, ...]]:
        """Per SKU, each listing it belongs to with what deriving its availability needs."""
        out: dict[str, list[ListingPlan]] = defaultdict(list)
        for listing in self.listings:
            skus = {c.sku for c in listing.components}
            local = len(skus) == 1
            per_unit = sum(c.quantity for c in listing.components)
            channel = self.channel_by_id[listing.channel]
            key = f"{channel.id}/{listing.channel_sku}"
            for sku in skus:
                published = key if local else f"{key}#{sku}"
                out[sku].append(ListingPlan(listing, channel, local, per_unit, published))
        return {sku: tuple(items) for sku, items in out.items()}

    def listings_for(self, sku: str) -> tuple[Listing, ...]:
        return self.listings_by_sku.get(sku, ())

    def channel_skus(self, sku: str) -> tuple[tuple[str, str], ...]:
        return tuple((li.channel, li.channel_sku) for li in self.listings_for(sku))


class ListingPlan(NamedTuple):
    listing: Listing
    channel: Channel
    local: bool  # every component is the same SKU: computed where that SKU lives
    per_unit: int  # units of that SKU per listing unit (local listings)
    published_key: str  # its key in SkuState.published, built once here instead of per derive


def load_catalog(data: Any) -> Catalog:
    """A Catalog from a parsed YAML/JSON mapping, or InvalidCatalog naming what is wrong."""
    if not isinstance(data, dict):
        raise InvalidCatalog("the catalog must be a mapping with locations, channels, listings")
    try:
        return Catalog.model_validate(data)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise InvalidCatalog(f"invalid catalog: {details}") from None
