"""Shopify order webhooks in their real payload shape, as SPEC events (and what is ignored)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.sources.shopify import ShopifyAdapter, ShopifySourceConfig, sign, verify
from streams.core.catalog import load_catalog
from streams.core.models import OrderCancelled, OrderCreated, ReturnReceived
from streams.errors import InvalidEvent

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
CATALOG = load_catalog(
    {
        "locations": [{"id": "wh-east"}, {"id": "store-12"}],
        "channels": [{"id": "shopify-us", "type": "shopify", "locations": ["wh-east"]}],
        "listings": [
            {
                "channel": "shopify-us",
                "channel_sku": "TEE-6PK",
                "components": [{"sku": "TEE-RED-M", "quantity": 6}],
            },
            {
                "channel": "shopify-us",
                "channel_sku": "GIFT-SET",
                "components": [{"sku": "MUG", "quantity": 1}, {"sku": "TEE-RED-M", "quantity": 2}],
            },
        ],
    }
)
CONFIG = ShopifySourceConfig(
    source="shopify-us", channel="shopify-us", locations={"655441491": "wh-east"}
)


def adapter(**changes: Any) -> ShopifyAdapter:
    return ShopifyAdapter.for_catalog(CONFIG.model_copy(update=changes), CATALOG)


def payload(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / f"shopify-{name}.json").read_text())
    assert isinstance(data, dict)
    return data


def test_signature_is_shopifys_base64_hmac_of_the_raw_body() -> None:
    body = b'{"id": 1}'
    expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert sign("s3cret", body) == expected
    assert verify("s3cret", body, expected)
    assert not verify("s3cret", body + b" ", expected)
    assert not verify("other", body, expected)
    assert not verify("s3cret", body, None)
    assert not verify("s3cret", body, "not base64 at all")


def test_orders_create_becomes_order_created_with_packs_expanded() -> None:
    (event,) = adapter().translate("orders/create", payload("orders-create")).events
    assert isinstance(event, OrderCreated)
    assert event.event_id == "shopify-us:order:820982911946154508:created"
    assert (event.order_id, event.channel, event.reservation_id) == (
        "820982911946154508",
        "shopify-us",
        "res-7f3a",
    )
    assert event.occurred_at.isoformat() == "2026-11-23T15:04:12+00:00"
    assert [(line.line_id, line.sku, line.quantity, line.location) for line in event.lines] == [
        ("466157049", "TEE-RED-M", 2, None),
        ("518995019", "TEE-RED-M", 6, None),  # one TEE-6PK; gift wrapping has no SKU
    ]


def test_bundles_get_a_line_per_component_and_pos_orders_a_location() -> None:
    order = payload("orders-create")
    order["location_id"] = 655441491
    order["line_items"] = [{"id": 9, "sku": "GIFT-SET", "quantity": 2, "gift_card": False}]
    (event,) = adapter().translate("orders/create", order).events
    assert isinstance(event, OrderCreated)
    assert [(line.line_id, line.sku, line.quantity, line.location) for line in event.lines] == [
        ("9:MUG", "MUG", 2, "wh-east"),
        ("9:TEE-RED-M", "TEE-RED-M", 4, "wh-east"),
    ]


def test_orders_cancelled_cancels_the_whole_order() -> None:
    (event,) = adapter().translate("orders/cancelled", payload("orders-cancelled")).events
    assert isinstance(event, OrderCancelled)
    assert (event.event_id, event.order_id, event.lines) == (
        "shopify-us:order:820982911946154508:cancelled",
        "820982911946154508",
        None,
    )
    assert event.occurred_at.isoformat() == "2026-11-23T16:20:00+00:00"


def test_refunds_return_restocks_and_cancel_restocks_release_lines() -> None:
    returned, cancelled = adapter().translate("refunds/create", payload("refunds-create")).events
    assert isinstance(returned, ReturnReceived)
    assert (returned.event_id, returned.sku, returned.location, returned.quantity) == (
        "shopify-us:refund:929361463:104689539",
        "TEE-RED-M",
        "wh-east",
        1,
    )
    assert (returned.order_id, returned.disposition) == ("820982911946154508", "resellable")
    assert isinstance(cancelled, OrderCancelled)
    assert cancelled.event_id == "shopify-us:refund:929361463:cancel"
    assert [(c.line_id, c.quantity) for c in cancelled.lines or []] == [("518995019", 6)]


def test_returns_need_a_location_we_know() -> None:
    refund = payload("refunds-create")
    refund["refund_line_items"][0]["location_id"] = 1234
    with pytest.raises(InvalidEvent, match="Shopify location 1234 is not mapped"):
        adapter().translate("refunds/create", refund)
    (returned, _) = adapter(return_location="store-12").translate("refunds/create", refund).events
    assert isinstance(returned, ReturnReceived) and returned.location == "store-12"


def test_what_is_ignored() -> None:
    refund = payload("refunds-create")
    for item in refund["refund_line_items"]:
        item["restock_type"] = "no_restock"
    assert adapter().translate("refunds/create", refund).ignored == (
        "refund 929361463 restocks nothing"
    )
    assert adapter().translate("products/update", {}).ignored == (
        "topic products/update is not mapped to inventory events"
    )
    order = payload("orders-create")
    order["line_items"] = [{"id": 1, "sku": "", "quantity": 1}]
    assert adapter().translate("orders/create", order).ignored == (
        "order 820982911946154508 has no line items with a SKU"
    )


def test_replays_translate_to_the_same_event_ids() -> None:
    body = payload("refunds-create")
    first = [e.event_id for e in adapter().translate("refunds/create", body).events]
    again = [
        e.event_id
        for e in adapter().translate("refunds/create", json.loads(json.dumps(body))).events
    ]
    assert first == again


@pytest.mark.parametrize(
    ("topic", "change", "reason"),
    [
        (None, {}, "X-Shopify-Topic: header is missing"),
        ("orders/create", {"id": None}, "id: missing"),
        ("orders/create", {"line_items": "many"}, "line_items: must be a list"),
        ("orders/create", {"created_at": "yesterday"}, "occurred_at"),
        ("orders/create", {"created_at": "2026-11-23T10:00:00"}, "timezone"),
        (
            "orders/create",
            {"line_items": [{"id": 1, "sku": "A", "quantity": -1}]},
            "line_items[0].quantity: -1 is not a whole number",
        ),
        (
            "orders/create",
            {
                "line_items": [
                    {"id": 1, "sku": "A", "quantity": 1},
                    {"id": 1, "sku": "B", "quantity": 1},
                ]
            },
            "line_id values must be unique",
        ),
        ("orders/cancelled", {"cancelled_at": None, "updated_at": None}, "cancelled_at"),
    ],
)
def test_payloads_that_cannot_be_mapped(
    topic: str | None, change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason.replace("[", r"\[").replace("]", r"\]")):
        adapter().translate(topic, {**payload("orders-create"), **change})
