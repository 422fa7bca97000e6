"""Shopify as the shop sees it: inventorySetQuantities calls with many items, within the cost
budget, compare-and-set honoured, refused items dead-lettered, the rest delivered."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from connectors.emulators import ShopifyEmulator, pointed_at
from connectors.sinks import SinkEngine, SinkMetrics, make_sink
from connectors.sinks.shopify import SET_QUANTITIES
from streams.core.catalog import Channel
from tests.connectors.sinks.sink_fakes import channel_record, deliver


def sent(shop: ShopifyEmulator, root_field: str) -> list[dict[str, Any]]:
    """The GraphQL requests the shop received for `root_field`."""
    bodies = [json.loads(r.body) for r in shop.requests]
    return [b for b in bodies if f"{root_field}(" in b["query"]]


async def test_one_call_sets_many_items_with_absolute_quantities() -> None:
    async with ShopifyEmulator() as shop:
        for i in range(30):
            shop.add_item(f"SKU-{i}", available=100)
        records = [channel_record(f"SKU-{i}", v, v * 10 + i) for v in (1, 2, 3) for i in range(30)]
        _, letters = await deliver(shop, "shopify", records)
    assert letters == []
    assert shop.final_values() == {f"SKU-{i}": 30 + i for i in range(30)}
    assert shop.mutations == 1  # 90 changes over 30 SKUs: one mutation
    (mutation,) = sent(shop, "inventorySetQuantities")
    assert "@idempotent(key: $key)" in mutation["query"]
    assert mutation["variables"]["key"]
    payload = mutation["variables"]["input"]
    assert payload["name"] == "available" and payload["reason"] == "correction"
    assert len(payload["quantities"]) == 30
    assert all(q["changeFromQuantity"] == 100 for q in payload["quantities"])  # read, then CAS


async def test_the_cost_budget_is_never_exceeded() -> None:
    async with ShopifyEmulator(maximum_available=40, restore_rate=200) as shop:
        for i in range(60):
            shop.add_item(f"SKU-{i}")
        records = [channel_record(f"SKU-{i}", 1, 7) for i in range(60)]
        _, letters = await deliver(shop, "shopify", records, max_batch=5)
    assert letters == []
    assert shop.throttled == 0
    assert shop.mutations == 12
    assert set(shop.final_values().values()) == {7}


async def test_a_restarted_sink_reads_the_current_quantity_before_setting() -> None:
    async with ShopifyEmulator() as shop:
        shop.add_item("TEE", available=5)
        await deliver(shop, "shopify", [channel_record("TEE", 1, 10)])
        shop.sell("TEE", 2)
        await deliver(shop, "shopify", [channel_record("TEE", 2, 9)])  # a new sink process
    assert shop.available("TEE") == 9
    assert shop.history["TEE"] == [10, 9]
    last = sent(shop, "inventorySetQuantities")[-1]["variables"]["input"]["quantities"][0]
    assert last["changeFromQuantity"] == 8


async def test_a_storefront_sale_between_writes_is_detected_then_overwritten() -> None:
    async with ShopifyEmulator() as shop:
        shop.add_item("MUG", available=1)
        shop.add_item("CUP", available=1)
        channel = pointed_at(Channel(id="shop", type="shopify", locations=["wh"]), shop)
        sink = make_sink(channel, SinkMetrics(CollectorRegistry()))
        engine = SinkEngine(sink)
        engine.offer(channel_record("MUG", 1, 4))
        engine.offer(channel_record("CUP", 1, 4))
        await engine.run_until_idle()
        shop.sell("MUG", 1)
        engine.offer(channel_record("MUG", 2, 6))
        engine.offer(channel_record("CUP", 2, 6))
        await engine.run_until_idle()
        await sink.close()
    assert shop.final_values() == {"MUG": 6, "CUP": 6}
    assert shop.history == {"MUG": [4, 6], "CUP": [4, 6]}
    # The stale compare was refused (nothing applied), MUG re-read, then both set in one call.
    assert len(sent(shop, "inventoryItems")) == 2
    assert shop.mutations == 3


async def test_unknown_and_unstocked_items_are_dead_lettered_and_the_rest_delivered() -> None:
    async with ShopifyEmulator() as shop:
        shop.add_item("OK", available=0)
        shop.add_item("ELSEWHERE", locations=("gid://shopify/Location/2",))
        shop.locations = (*shop.locations, "gid://shopify/Location/2")
        records = [
            channel_record("OK", 1, 3),
            channel_record("GHOST", 1, 3),
            channel_record("ELSEWHERE", 1, 3),
        ]
        _, letters = await deliver(shop, "shopify", records)
    assert shop.available("OK") == 3
    reasons = dict(letters)
    assert set(reasons) == {"GHOST", "ELSEWHERE"}
    assert "no inventory item with SKU 'GHOST'" in reasons["GHOST"]
    assert "not stocked" in reasons["ELSEWHERE"]


async def test_an_outage_ends_with_the_final_values_and_no_stale_overwrite() -> None:
    async with ShopifyEmulator() as shop:
        for sku in ("A", "B", "C"):
            shop.add_item(sku)
        shop.outage(0.6, statuses=(500, 429, 503), retry_after=0.1)
        records = [channel_record(s, v, v) for v in range(1, 6) for s in ("A", "B", "C")]
        _, letters = await deliver(shop, "shopify", records)
    assert letters == []
    assert shop.injected > 0
    assert shop.final_values() == {"A": 5, "B": 5, "C": 5}
    for values in shop.history.values():
        assert values == sorted(set(values))


# ---- the emulator answers malformed requests the way the Admin API does ----


async def post(shop: ShopifyEmulator, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{shop.url}/admin/api/2026-04/graphql.json",
            json={"query": query, "variables": variables},
            headers={"X-Shopify-Access-Token": shop.access_token},
        )
        return dict(await response.json())


def quantity(shop: ShopifyEmulator, sku: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "inventoryItemId": shop.items[sku],
        "locationId": shop.locations[0],
        "quantity": value,
        **extra,
    }


async def test_emulator_requires_the_idempotency_key_and_change_from_quantity() -> None:
    async with ShopifyEmulator() as shop:
        shop.add_item("A", available=1)
        no_key = SET_QUANTITIES.replace(" @idempotent(key: $key)", "")
        base = {"name": "available", "reason": "correction"}
        answer = await post(shop, no_key, {"input": {**base, "quantities": []}})
        assert "@idempotent" in answer["errors"][0]["message"]
        answer = await post(
            shop,
            SET_QUANTITIES,
            {"key": "k1", "input": {**base, "quantities": [quantity(shop, "A", 2)]}},
        )
        (error,) = answer["data"]["inventorySetQuantities"]["userErrors"]
        assert error["code"] == "CHANGE_FROM_QUANTITY_REQUIRED"
        stale = {**base, "quantities": [quantity(shop, "A", 2, changeFromQuantity=7)]}
        answer = await post(shop, SET_QUANTITIES, {"key": "k2", "input": stale})
        (error,) = answer["data"]["inventorySetQuantities"]["userErrors"]
        assert error["code"] == "CHANGE_FROM_QUANTITY_STALE"
        assert error["field"] == ["input", "quantities", "0", "changeFromQuantity"]
        typed = {**base, "quantities": [quantity(shop, "A", "two", changeFromQuantity=None)]}
        answer = await post(shop, SET_QUANTITIES, {"key": "k3", "input": typed})
        assert answer["errors"][0]["extensions"]["code"] == "INVALID_VARIABLE"
        too_many = {**base, "quantities": [quantity(shop, "A", 1, changeFromQuantity=None)] * 251}
        answer = await post(shop, SET_QUANTITIES, {"key": "k4", "input": too_many})
        assert answer["errors"][0]["extensions"]["code"] == "MAX_INPUT_SIZE_EXCEEDED"
        assert shop.available("A") == 1


async def test_emulator_applies_a_repeated_idempotency_key_once() -> None:
    async with ShopifyEmulator() as shop:
        shop.add_item("A", available=1)
        good = {
            "name": "available",
            "reason": "correction",
            "quantities": [quantity(shop, "A", 2, changeFromQuantity=1)],
        }
        first = await post(shop, SET_QUANTITIES, {"key": "same", "input": good})
        again = await post(shop, SET_QUANTITIES, {"key": "same", "input": good})
        assert first["data"] == again["data"]
        assert shop.mutations == 1 and shop.history["A"] == [2]


async def test_emulator_throttles_calls_beyond_the_bucket() -> None:
    async with ShopifyEmulator(maximum_available=25, restore_rate=1) as shop:
        shop.add_item("A")
        answers = []
        for n in range(3):
            good = {
                "name": "available",
                "reason": "correction",
                "quantities": [quantity(shop, "A", n, changeFromQuantity=None)],
            }
            answers.append(await post(shop, SET_QUANTITIES, {"key": f"k{n}", "input": good}))
    assert "errors" not in answers[0] and "errors" not in answers[1]
    assert answers[2]["errors"][0]["extensions"]["code"] == "THROTTLED"
    status = answers[2]["extensions"]["cost"]["throttleStatus"]
    assert status["maximumAvailable"] == 25 and status["currentlyAvailable"] < 10
    assert shop.throttled == 1


async def test_a_resync_after_drift_is_applied_not_answered_from_the_idempotency_cache() -> None:
    # The same records, the same compare value and the same items as an earlier call: a new
    # intent all the same (someone reset the shop's level), so the shop must apply it again.
    async with ShopifyEmulator() as shop:
        for sku in ("A", "B"):
            shop.add_item(sku, available=0)
        records = [channel_record(sku, 3, 9) for sku in ("A", "B")]
        await deliver(shop, "shopify", records)
        shop.levels = {key: 0 for key in shop.levels}  # drift on the shop's side
        engine, letters = await deliver(shop, "shopify", records)  # a resync: a new sink
    assert letters == [] and engine.acked == 2
    assert shop.final_values() == {"A": 9, "B": 9}


async def test_a_quantity_that_comes_back_to_an_earlier_value_is_written_again() -> None:
    async with ShopifyEmulator() as shop:
        shop.add_item("TEE", available=3)
        channel = pointed_at(Channel(id="shop", type="shopify", locations=["wh"]), shop)
        sink = make_sink(channel, SinkMetrics(CollectorRegistry()))
        engine = SinkEngine(sink)
        for version, available in enumerate((5, 3, 5), start=1):  # 3 -> 5, 5 -> 3, 3 -> 5
            engine.offer(channel_record("TEE", version, available))
            await engine.run_until_idle()
        await sink.close()
    assert shop.history["TEE"] == [5, 3, 5]
    assert shop.available("TEE") == 5
