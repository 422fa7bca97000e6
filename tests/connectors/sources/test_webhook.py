"""The webhook receiver over HTTP: signed deliveries become events, answered after the broker's ack;
unsigned ones get 401 and produce nothing; replays are answered from memory."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from connectors.sources.base import InvalidSourceConfig
from connectors.sources.metrics import SourceMetrics
from connectors.sources.shopify import sign
from connectors.sources.webhook import (
    DELIVERY_HEADER,
    default_sources,
    load_sources,
    make_app,
    receiver_of,
)
from streams.core.catalog import load_catalog
from streams.core.models import OrderCreated
from streams.settings import Settings
from tests.connectors.sources.source_fakes import FakeKafka, fake_producer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
SECRETS = {"shopify-us": "shpss_test", "wms-east": "whsec_wms", "pos-store-12": "whsec_pos"}
SETTINGS = Settings(webhook_secrets=SECRETS)
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
        ],
    }
)
SOURCES = load_sources(FIXTURES / "sources.yaml", SETTINGS, CATALOG)
ORDER = (FIXTURES / "shopify-orders-create.json").read_bytes()


@dataclass
class Rig:
    client: TestClient[web.Request, web.Application]
    kafka: FakeKafka
    app: web.Application
    metrics: SourceMetrics

    async def shopify(
        self,
        body: bytes,
        *,
        topic: str = "orders/create",
        webhook_id: str | None = "wh-1",
        secret: str = SECRETS["shopify-us"],
        shop: str = "inventory-demo.myshopify.com",
    ) -> tuple[int, dict[str, object]]:
        headers = {
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": sign(secret, body),
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-API-Version": "2026-10",
            "Content-Type": "application/json",
        }
        if webhook_id is not None:
            headers["X-Shopify-Webhook-Id"] = webhook_id
        response = await self.client.post("/webhooks/shopify-us", data=body, headers=headers)
        return response.status, await response.json()

    async def signed(
        self,
        source: str,
        body: bytes,
        *,
        delivery: str | None = None,
        stale: bool = False,
        secret: str | None = None,
    ) -> tuple[int, dict[str, object]]:
        stamp = str(int(time.time()) - (3600 if stale else 0))
        headers = {
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature(secret or SECRETS[source], stamp, body),
        }
        if delivery is not None:
            headers[DELIVERY_HEADER] = delivery
        response = await self.client.post(f"/webhooks/{source}", data=body, headers=headers)
        return response.status, await response.json()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    producer, kafka = fake_producer()
    metrics = SourceMetrics.for_registry(CollectorRegistry())
    app = make_app(SETTINGS, producer, sources=SOURCES, metrics=metrics)
    async with TestClient(TestServer(app)) as client:
        yield Rig(client, kafka, app, metrics)


def spec_event(event_id: str, quantity: int = 5, source: str = "wms-east") -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "type": "stock-adjusted",
            "occurred_at": "2026-11-23T10:00:00Z",
            "source": source,
            "sku": "TEE-RED-M",
            "location": "wh-east",
            "mode": "delta",
            "quantity": quantity,
        }
    ).encode()


async def test_a_signed_shopify_order_is_produced_before_the_answer(rig: Rig) -> None:
    status, body = await rig.shopify(ORDER)
    assert status == 200
    assert body == {
        "status": "produced",
        "event_ids": ["shopify-us:order:820982911946154508:created"],
    }
    (event,) = rig.kafka.events()  # acknowledged before the 200 was sent
    assert isinstance(event, OrderCreated) and event.channel == "shopify-us"
    assert rig.kafka.log[0].key() == event.lines[0].sku.encode()  # SPEC §5: keyed by SKU


async def test_a_bad_signature_gets_401_and_produces_nothing(rig: Rig) -> None:
    status, body = await rig.shopify(ORDER, secret="guess")
    assert status == 401
    assert body == {"error": "missing or wrong X-Shopify-Hmac-Sha256 signature", "status": 401}
    response = await rig.client.post("/webhooks/shopify-us", data=ORDER)
    assert response.status == 401
    status, _ = await rig.signed("wms-east", spec_event("e1"), secret="guess")
    assert status == 401
    status, body = await rig.signed("wms-east", spec_event("e1"), stale=True)
    assert status == 401 and "stale X-Inventory-Timestamp" in str(body["error"])
    status, body = await rig.shopify(ORDER, shop="someone-else.myshopify.com")
    assert status == 401
    assert rig.kafka.log == []
    assert rig.metrics.unauthorized.labels("shopify-us")._value.get() == 3


async def test_a_replayed_webhook_id_is_answered_without_producing(rig: Rig) -> None:
    first = await rig.shopify(ORDER, webhook_id="wh-42")
    again = await rig.shopify(ORDER, webhook_id="wh-42")
    assert first[0] == again[0] == 200
    assert again[1]["duplicate_of_delivery"] == "wh-42"
    assert len(rig.kafka.log) == 1
    tally = receiver_of(rig.app).tally["shopify-us"]
    assert (tally.received, tally.produced, tally.duplicates) == (2, 1, 1)


async def test_the_same_delivery_sent_twice_at_once_produces_once(rig: Rig) -> None:
    results = await asyncio.gather(*(rig.shopify(ORDER, webhook_id="wh-7") for _ in range(5)))
    assert {status for status, _ in results} == {200}
    assert len(rig.kafka.log) == 1


async def test_without_a_webhook_id_a_replay_has_the_same_event_ids(rig: Rig) -> None:
    await rig.shopify(ORDER, webhook_id=None)
    await rig.shopify(ORDER, webhook_id=None)
    ids = [e.event_id for e in rig.kafka.events()]
    assert len(ids) == 2 and ids[0] == ids[1]  # the stream core applies it once


async def test_an_unmappable_shopify_payload_is_dead_lettered_and_acknowledged(rig: Rig) -> None:
    body = b'{"id": 5, "line_items": "nope"}'
    status, answer = await rig.shopify(body, webhook_id="wh-bad")
    assert status == 200
    assert answer == {
        "status": "dead-lettered",
        "reason": "orders/create: line_items: must be a list",
    }
    (letter,) = rig.kafka.dead_letters()
    assert (letter.original, letter.source, letter.key) == (
        body,
        "shopify-us",
        b"shopify-us:wh-bad",
    )
    status, answer = await rig.shopify(b"{not json", webhook_id="wh-bad-2")
    assert status == 200 and str(answer["reason"]).startswith("orders/create: malformed JSON")


async def test_topics_we_do_not_map_are_ignored(rig: Rig) -> None:
    status, answer = await rig.shopify(b'{"id": 1}', topic="products/update")
    assert (status, answer["status"]) == (200, "ignored")
    assert rig.kafka.log == []


async def test_spec_events_in_json_lines(rig: Rig) -> None:
    body = (
        spec_event("wms-1")
        + b"\n"
        + spec_event("wms-2", quantity=0)
        + b"\n"
        + spec_event("x-1", source="erp")
        + b"\n"
        + spec_event("wms-3")
    )
    status, answer = await rig.signed("wms-east", body)
    assert status == 422
    assert answer["produced"] == 2 and answer["dead_lettered"] == 2
    assert answer["errors"] == [
        {
            "line": 2,
            "reason": "stock-adjusted wms-2: a delta of 0 changes nothing; quantity must not be 0",
        },
        {"line": 3, "reason": "source: 'erp' does not match the webhook source 'wms-east'"},
    ]
    assert [e.event_id for e in rig.kafka.events()] == ["wms-1", "wms-3"]
    assert [d.original for d in rig.kafka.dead_letters()] == [
        spec_event("wms-2", quantity=0) + b"\n",
        spec_event("x-1", source="erp") + b"\n",
    ]
    status, answer = await rig.signed("wms-east", spec_event("wms-4"), delivery="d-1")
    assert (status, answer) == (200, {"status": "produced", "produced": 1, "dead_lettered": 0})


async def test_an_empty_body_is_dead_lettered_too(rig: Rig) -> None:
    status, answer = await rig.signed("wms-east", b"")
    assert status == 422 and answer["dead_lettered"] == 1
    assert rig.kafka.dead_letters()[0].reason == (
        "line 1: empty body: expected one SPEC event per line"
    )


async def test_pos_uploads_over_http(rig: Rig) -> None:
    upload = (FIXTURES / "pos-store-12.jsonl").read_bytes()
    status, answer = await rig.signed("pos-store-12", upload, delivery="store12-batch-1")
    assert status == 422  # some lines were refused; the others are produced
    assert (answer["produced"], answer["dead_lettered"], answer["ignored"]) == (3, 3, 1)
    assert len(rig.kafka.events()) == 3


async def test_unknown_sources_and_health(rig: Rig) -> None:
    response = await rig.client.post("/webhooks/nobody", data=b"{}")
    assert response.status == 404
    assert await response.json() == {
        "error": "no webhook source 'nobody' is configured here",
        "status": 404,
    }
    health = await rig.client.get("/health")  # the name every HTTP surface uses
    assert await health.json() == {
        "status": "ok",
        "sources": ["pos-store-12", "shopify-us", "wms-east"],
    }


async def test_a_full_producer_answers_503_with_retry_after() -> None:
    producer, kafka = fake_producer(capacity=0)
    app = make_app(SETTINGS, producer, sources=SOURCES)
    receiver_of(app).produce_deadline = 0.05
    async with TestClient(TestServer(app)) as client:
        stamp = str(int(time.time()))
        response = await client.post(
            "/webhooks/wms-east",
            data=spec_event("e"),
            headers={
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: signature(SECRETS["wms-east"], stamp, spec_event("e")),
                DELIVERY_HEADER: "d-9",
            },
        )
        assert response.status == 503 and response.headers["Retry-After"] == "5"
        assert "buffer stayed full" in (await response.json())["error"]
        kafka.capacity = 10  # the retry of the same delivery id goes through
        response = await client.post(
            "/webhooks/wms-east",
            data=spec_event("e"),
            headers={
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: signature(SECRETS["wms-east"], stamp, spec_event("e")),
                DELIVERY_HEADER: "d-9",
            },
        )
        assert response.status == 200 and len(kafka.events()) == 1


async def test_a_broker_refusal_answers_503() -> None:
    producer, _ = fake_producer(fail=lambda _msg: True)
    app = make_app(SETTINGS, producer, sources=SOURCES)
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/webhooks/shopify-us",
            data=ORDER,
            headers={
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Hmac-Sha256": sign(SECRETS["shopify-us"], ORDER),
            },
        )
        assert response.status == 503
        assert "the broker refused 1 of 1 records" in (await response.json())["error"]


async def test_bodies_over_the_limit_get_413() -> None:
    producer, kafka = fake_producer()
    settings = SETTINGS.model_copy(update={"webhook_max_body_bytes": 1000})
    app = make_app(settings, producer, sources=SOURCES)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/webhooks/wms-east", data=b"x" * 5000)
        assert response.status == 413
        assert await response.json() == {
            "error": "the body is larger than the 1,000 bytes accepted",
            "status": 413,
        }
    assert kafka.log == []


def test_configuration_errors() -> None:
    with pytest.raises(InvalidSourceConfig, match="webhook source wms-east has no secret"):
        load_sources(FIXTURES / "sources.yaml", Settings(webhook_secrets={"shopify-us": "x"}))
    sources = default_sources(Settings(webhook_secrets={"shopify-us": "a", "erp": "b"}), CATALOG)
    assert {name: s.kind for name, s in sources.items()} == {
        "shopify-us": "shopify",
        "erp": "events",
    }
