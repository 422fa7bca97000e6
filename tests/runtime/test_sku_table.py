"""The SKU stage's table (SkuTable): a record is decoded once, when first needed, its parts joined
and then held once; a read for the API changes nothing; re-derivations pick the right SKUs and
leave the others as they are kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any, cast

import orjson

from streams.core.state import SkuState
from streams.runtime.clock import Clock
from streams.runtime.sku_table import SkuTable
from streams.runtime.tables import ColdSku, DeferredWrites
from streams.runtime.topics import partition_for
from tests.core.test_record_parts import hot_sku
from tests.test_topology import RecordingOutputs, keys_on, sku_at

PARTS = "app-sku_parts-changelog"


class Table:
    """What the stage uses of a Faust table: its data, `get`, its changelog topic's name."""

    def __init__(self, name: str) -> None:
        self.data: dict[bytes, Any] = {}
        self.changelog_topic = self
        self.name = name

    def get(self, key: bytes) -> Any:
        return self.data.get(key)

    def get_topic_name(self) -> str:
        return self.name


def opened(warm_skus: int | None = None) -> tuple[SkuTable, RecordingOutputs]:
    outputs = RecordingOutputs()
    writes = DeferredWrites(outputs, 4, parts_topic=PARTS, warm_skus=warm_skus)  # type: ignore[arg-type]
    table = SkuTable(Table("app-skus-changelog"), Table(PARTS), writes, 4, Clock("stream"))
    return table, outputs


def cold(state: SkuState) -> ColdSku:
    data = orjson.dumps(state.to_dict())
    return ColdSku.of_record(data, orjson.loads(data))


def test_a_cold_sku_is_decoded_once_and_then_held_as_its_state() -> None:
    table, _ = opened(warm_skus=10)
    table.skus.data[b"A"] = cold(sku_at("A", 2))
    state = table.load(b"A")
    assert state is not None and state.to_dict() == sku_at("A", 2).to_dict()
    assert table.skus.data[b"A"] is state and table.load(b"A") is state
    assert b"A" in table.writes.warm  # cooled again, as its bytes, once written long ago
    assert table.load(b"NONE") is None


def recovered_in_parts(state: SkuState) -> SkuTable:
    """A table as a restart recovers a hot SKU: its record and its parts, as their JSON."""
    table, outputs = opened()
    table.writes.put(table.skus, state.sku.encode(), state)
    asyncio.run(table.writes.write())
    restarted, _ = opened()
    for record in outputs.records:
        if record["key"] != DeferredWrites.MARKER:
            owner = (
                restarted.skus if record["topic"] == "app-skus-changelog" else restarted.sku_parts
            )
            owner.data[record["key"]] = orjson.loads(record["value"])
    assert len(restarted.sku_parts.data) == 64
    return restarted


def test_a_record_in_parts_is_joined_and_its_parts_held_once() -> None:
    """A hot SKU recovered as its record and its parts: joined on first use, the parts dropped
    from `sku_parts` (the state holds them), and its next write only what changed since."""
    state = hot_sku(20_000)
    restarted = recovered_in_parts(state)
    outputs = cast(RecordingOutputs, restarted.writes.outputs)
    joined = restarted.load(b"LAUNCH-1")
    assert joined is not None and joined.to_dict() == state.to_dict()
    assert restarted.skus.data[b"LAUNCH-1"] is joined and restarted.sku_parts.data == {}
    restarted.writes.put(restarted.skus, b"LAUNCH-1", joined)
    asyncio.run(restarted.writes.write())
    assert not [r for r in outputs.records if r["topic"] == PARTS]  # no part changed


def test_a_read_for_the_api_leaves_the_table_as_it_is() -> None:
    table, _ = opened()
    kept = cold(sku_at("A", 2))
    table.skus.data[b"A"] = kept
    table.skus.data[b"B"] = sku_at("B", 1).to_dict()  # recovered, not decoded yet
    assert table.peek("A", 3).to_dict() == sku_at("A", 2).to_dict()
    assert table.peek("B", 3).to_dict() == sku_at("B", 1).to_dict()
    assert table.skus.data[b"A"] is kept and isinstance(table.skus.data[b"B"], dict)
    unknown = table.peek("C", 7)
    assert unknown.sku == "C" and unknown.catalog_version == 7 and not unknown.locations
    assert b"C" not in table.skus.data


def test_a_new_catalog_rederives_the_skus_of_the_partition_derived_under_another() -> None:
    table, _ = opened()
    mine = keys_on(1, 4, 4)
    other = keys_on(2, 4, 1)[0]
    old, current, recovered_old, touched_already = mine
    table.skus.data[old] = cold(sku_at(old.decode(), 1))  # catalog_version 3
    table.skus.data[current] = cold(_under(sku_at(current.decode(), 1), 4))
    table.skus.data[recovered_old] = sku_at(recovered_old.decode(), 1).to_dict()
    table.skus.data[touched_already] = cold(sku_at(touched_already.decode(), 1))
    table.skus.data[other] = cold(sku_at(other.decode(), 1))
    late = sku_at("LATE", 1)
    late.time = datetime(2026, 11, 5, tzinfo=UTC)
    table.skus.data[keys_on(2, 4, 2)[1]] = cold(late)
    touched: dict[bytes, Any] = {touched_already: "as the batch left it"}
    table.rederive_partition(1, touched, 4)
    assert sorted(touched) == sorted([old, recovered_old, touched_already])
    assert touched[touched_already] == "as the batch left it"
    state, locations, as_of, cause, resend = touched[old]
    assert state is table.skus.data[old] and locations == set() and not resend
    assert (as_of, cause) == (state.time, "catalog:v4")
    assert isinstance(table.skus.data[current], ColdSku)  # not decoded: nothing to derive
    # every record seen moves the stream clock (see catch_up), another partition's too
    assert table.clock.today() == date(2026, 11, 5)


def test_a_new_date_rederives_the_skus_of_the_partition_that_expect_a_po() -> None:
    table, _ = opened()
    po_cold, po_recovered, none_cold, none_recovered = keys_on(0, 4, 4)
    table.skus.data[po_cold] = cold(sku_at(po_cold.decode(), 2, po=True))
    table.skus.data[po_recovered] = sku_at(po_recovered.decode(), 1, po=True).to_dict()
    table.skus.data[none_cold] = cold(sku_at(none_cold.decode(), 2))
    table.skus.data[none_recovered] = sku_at(none_recovered.decode(), 1).to_dict()
    elsewhere = keys_on(3, 4, 1)[0]
    table.skus.data[elsewhere] = cold(sku_at(elsewhere.decode(), 1, po=True))
    decoded = keys_on(0, 4, 5)[4]
    table.skus.data[decoded] = sku_at(decoded.decode(), 1)  # decoded already, no PO
    touched: dict[bytes, Any] = {}
    table.rederive_inbound(0, touched, date(2026, 11, 2))
    assert sorted(touched) == sorted([po_cold, po_recovered])
    assert {entry[3] for entry in touched.values()} == {"clock:2026-11-02"}
    # those that expect none are not decoded to find out
    assert isinstance(table.skus.data[none_cold], ColdSku)
    assert isinstance(table.skus.data[none_recovered], dict)
    assert isinstance(table.skus.data[elsewhere], ColdSku)
    assert partition_for(elsewhere, 4) == 3


def _under(state: SkuState, version: int) -> SkuState:
    state.catalog_version = version
    return state


def test_a_hot_sku_recovered_in_parts_is_not_joined_to_find_it_expects_no_po() -> None:
    table = recovered_in_parts(hot_sku(20_000))
    touched: dict[bytes, Any] = {}
    table.rederive_inbound(partition_for(b"LAUNCH-1", 4), touched, date(2026, 11, 2))
    assert touched == {}
    assert isinstance(table.skus.data[b"LAUNCH-1"], dict) and len(table.sku_parts.data) == 64
