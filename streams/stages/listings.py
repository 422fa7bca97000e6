"""The listing stage: a bundle's or kit's availability from its components' values, keyed by
listing. A component's value older than the one kept changes nothing; a record is published when
the listing's availability changes."""

from __future__ import annotations

from typing import TypeVar

from streams.core.catalog import Catalog
from streams.core.derive import ComponentUpdate, ListingState, apply_component
from streams.stages.effects import Effects, Table

K = TypeVar("K")


def listing_key(update: ComponentUpdate) -> str:
    """The stage key of the listing a component value is for."""
    return f"{update.channel}|{update.channel_sku}"


def handle_component(
    table: Table[K, ListingState],
    key: K,
    update: ComponentUpdate,
    catalog: Catalog,
    out: Effects,
    floor: int = 0,
    force: bool = False,
) -> None:
    """One component's values folded into its listing; `floor` and `force` as apply_component's
    (a record version above any sent before a crash; publish even an unchanged value)."""
    state = table.get(key) or ListingState({})
    record = apply_component(state, update, catalog, floor, force)
    if record is not None:
        out.availability.append(record)
    table.put(key, state)
