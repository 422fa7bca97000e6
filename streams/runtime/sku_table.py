"""The SKU stage's table as the stage reads it: a SKU's record is decoded (and a hot SKU's parts
joined) only when the stage first needs the SKU, once, and re-derivations pass over the records
that cannot change without decoding them.

A worker at 1,000,000 positions holds every record of its partitions after a restart: kept as
bytes (ColdSku) or as the recovered JSON of a record in parts (`sku_parts` holds the parts), a
record costs a fraction of a decoded SkuState. Whatever decodes a record goes through here, so
the table holds one copy of each SKU and the changelog writes know what was decoded (warmed) and
what a split record's parts were when stored (SplitCache.seeded).
"""

from __future__ import annotations

from datetime import date
from typing import Any, cast

from streams.core.derive import expects_inbound
from streams.core.state import SkuState, SplitCache, in_parts, join_parts, part_key, part_names
from streams.runtime.clock import Clock
from streams.runtime.tables import ColdSku, DeferredWrites, state_time
from streams.runtime.topics import partition_for


class SkuTable:
    """The `skus` table (one-record SKUs recovered cold, hot SKUs' records in parts) and its
    `sku_parts` table, over the writes that reach their changelogs; `touched` maps are the SKU
    stage's states changed since the last flush: key -> (state, locations, as_of, cause, resend)."""

    def __init__(
        self, skus: Any, sku_parts: Any, writes: DeferredWrites, partitions: int, clock: Clock
    ) -> None:
        self.skus = skus
        self.sku_parts = sku_parts
        self.writes = writes
        self.partitions = partitions
        self.clock = clock

    def load(self, key: bytes) -> SkuState | None:
        """A SKU's state: decoded if it was kept cold (ColdSku) or as recovered, a hot SKU's parts
        joined to it."""
        value = self.skus.get(key)
        if isinstance(value, ColdSku):
            state = value.state()
            self.writes.warmed(self.skus, key, state, value.data)
            return state
        if not isinstance(value, dict):
            return cast("SkuState | None", value)
        state = self.decoded(key, value)
        if in_parts(value):
            self.skus.data[key] = state  # the parts now live in the state: one copy in memory
            # its next write is what changed since the records stored (SplitCache.seeded)
            self.writes.splits[key] = SplitCache.seeded(
                state, lambda name: self.sku_parts.data.get(part_key(key, name))
            )
            for name in part_names(value, state):
                self.sku_parts.data.pop(part_key(key, name), None)
        return state

    def decoded(self, key: bytes, value: dict[str, Any] | ColdSku) -> SkuState:
        """A SKU's record kept cold or as recovered (JSON), its parts joined; the tables are left
        as they are."""
        if isinstance(value, ColdSku):
            return value.state()
        if not in_parts(value):
            return SkuState.from_dict(value)
        return join_parts(value, lambda name: self.sku_parts.data.get(part_key(key, name)))

    def peek(self, sku: str, catalog_version: int) -> SkuState:
        """The SKU's state as the table holds it, read only (the tables are left as they are);
        an empty state, under `catalog_version`, for a SKU it has no record of."""
        key = sku.encode()
        value = self.skus.data.get(key)
        if value is None:
            return SkuState(sku, catalog_version=catalog_version)
        if isinstance(value, dict | ColdSku):
            return self.decoded(key, value)
        return cast(SkuState, value)

    def rederive_partition(self, partition: int, touched: dict[bytes, Any], version: int) -> None:
        """Every SKU of this partition derived under an older catalog than `version` is derived
        again."""
        for key, value in list(self.skus.data.items()):
            self.clock.observe(state_time(value))  # see catch_up
            if key in touched or partition_for(key, self.partitions) != partition:
                continue
            # a state, or kept cold (ColdSku): its catalog_version
            derived_under = value.get("v", 0) if isinstance(value, dict) else value.catalog_version
            if derived_under != version:
                state = self.load(key)
                assert state is not None  # a key of the table
                touched[key] = (state, set(), state.time, f"catalog:v{version}", False)

    def rederive_inbound(self, partition: int, touched: dict[bytes, Any], day: date) -> None:
        """Every SKU of this partition that expects a PO is derived again (a new clock date)."""
        cause = f"clock:{day.isoformat()}"
        for key, value in list(self.skus.data.items()):
            if key in touched or partition_for(key, self.partitions) != partition:
                continue
            if isinstance(value, ColdSku):  # look before decoding
                if not value.inbound:
                    continue
                value = self.load(key)
            elif isinstance(value, dict):  # recovered, not decoded yet: likewise
                if not value.get("w") and not any(loc["i"] for loc in value["l"].values()):
                    continue
                value = self.load(key)
            if expects_inbound(value):
                touched[key] = (value, set(), value.time, cause, False)
