"""Amazon as Seller Central sees it: patchListingsItem within the usage plan, backorders with a
restock date, a JSON_LISTINGS_FEED for large backlogs, refusals dead-lettered."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

import aiohttp

from connectors.emulators import AmazonEmulator
from tests.connectors.sinks.sink_fakes import channel_record, deliver


def patches(amazon: AmazonEmulator) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in amazon.requests if r.method == "PATCH"]


async def test_patches_stay_within_the_usage_plan() -> None:
    async with AmazonEmulator(rate=5, burst=5) as amazon:
        for i in range(12):
            amazon.add_listing(f"SKU-{i}")
        records = [channel_record(f"SKU-{i}", v, v + i) for v in (1, 2) for i in range(12)]
        _, letters = await deliver(amazon, "amazon", records)
    assert letters == []
    assert amazon.final_values() == {f"SKU-{i}": 2 + i for i in range(12)}
    assert amazon.throttled == 0
    assert amazon.calls("/listings/") == 12  # one call per SKU: the older versions never went
    assert amazon.max_calls_in_window(1.0, "/listings/") <= 5 + 5
    body = patches(amazon)[0]
    assert body["productType"] == "PRODUCT"
    (patch,) = body["patches"]
    assert patch["op"] == "replace" and patch["path"] == "/attributes/fulfillment_availability"
    assert patch["value"][0]["fulfillment_channel_code"] == "DEFAULT"
    assert "marketplaceIds=ATVPDKIKX0DER" in amazon.requests[0].path


async def test_a_backorderable_item_carries_its_restock_date_and_lead_time() -> None:
    async with AmazonEmulator() as amazon:
        amazon.add_listing("PRE")
        record = channel_record("PRE", 1, 0, backorderable=40, restock=date(2026, 12, 4))
        await deliver(amazon, "amazon", [record])
    (entry,) = amazon.listings["PRE"]["fulfillment_availability"]
    assert entry["quantity"] == 40
    assert entry["restock_date"] == "2026-12-04"
    assert entry["lead_time_to_ship_max_days"] == 7  # as_of 2026-11-27


async def test_a_large_backlog_goes_through_one_listings_feed() -> None:
    async with AmazonEmulator(feed_processing_seconds=0.1) as amazon:
        for i in range(40):
            amazon.add_listing(f"SKU-{i}")
        records = [channel_record(f"SKU-{i}", 1, 3) for i in range(40)]
        records.append(channel_record("GHOST", 1, 3))
        engine, letters = await deliver(
            amazon, "amazon", records, feed_threshold=20, feed_poll_seconds=0.05
        )
    assert set(amazon.final_values().values()) == {3}
    assert len(amazon.feeds) == 1
    assert amazon.calls("/listings/") < 10  # the few that went before the backlog was seen
    assert [sku for sku, _ in letters] == ["GHOST"]
    assert "does not match any listing" in letters[0][1]
    assert engine.acked == 40


async def test_429_and_5xx_are_retried_until_the_final_values_are_there() -> None:
    async with AmazonEmulator() as amazon:
        for sku in ("A", "B"):
            amazon.add_listing(sku)
        amazon.fail_next(2, status=429, retry_after=0.1)
        amazon.fail_next(2, status=503)
        records = [channel_record(s, v, v) for v in (1, 2, 3) for s in ("A", "B")]
        _, letters = await deliver(amazon, "amazon", records)
    assert letters == []
    assert amazon.final_values() == {"A": 3, "B": 3}
    assert amazon.injected == 4
    for values in amazon.history.values():
        assert values == sorted(set(values))


async def test_emulator_refuses_malformed_patches_like_the_api() -> None:
    async with AmazonEmulator() as amazon, aiohttp.ClientSession() as session:
        amazon.add_listing("A", quantity=2)
        url = f"{amazon.url}/listings/2021-08-01/items/{amazon.seller_id}/A"
        headers = {"x-amz-access-token": amazon.access_token}
        good = {
            "productType": "PRODUCT",
            "patches": [
                {
                    "op": "replace",
                    "path": "/attributes/fulfillment_availability",
                    "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": -1}],
                }
            ],
        }
        no_marketplace = await session.patch(url, json=good, headers=headers)
        assert no_marketplace.status == 400
        invalid = await session.patch(
            url + "?marketplaceIds=ATVPDKIKX0DER", json=good, headers=headers
        )
        answer = await invalid.json()
        assert invalid.status == 200 and answer["status"] == "INVALID"
        assert "quantity" in answer["issues"][0]["message"]
        no_type = await session.patch(
            url + "?marketplaceIds=ATVPDKIKX0DER", json={"patches": []}, headers=headers
        )
        assert no_type.status == 400
        anonymous = await session.patch(url + "?marketplaceIds=ATVPDKIKX0DER", json=good)
        assert anonymous.status == 403
    assert amazon.quantity("A") == 2


async def test_after_a_feed_a_backlog_worth_more_patches_than_its_duration_takes_a_feed() -> None:
    async with AmazonEmulator(feed_processing_seconds=0.1) as amazon:
        for i in range(60):
            amazon.add_listing(f"SKU-{i}")
        first = [channel_record(f"SKU-{i}", 1, 3) for i in range(40)]
        settings = {"feed_threshold": 20, "feed_poll_seconds": 0.05}
        engine, _ = await deliver(amazon, "amazon", first, **settings)
        # the feed took ~0.2 s, in which patches clear one SKU: 15 waiting SKUs justify a feed
        assert engine.sink.bulk_threshold < 15  # type: ignore[attr-defined]
        for i in range(40, 55):
            engine.offer(channel_record(f"SKU-{i}", 1, 3))
        engine.end_of_input()
        await asyncio.wait_for(engine.run_until_idle(), 10)
        await engine.sink.close()
    assert len(amazon.feeds) == 2
    assert set(amazon.final_values().values()) == {0, 3}
