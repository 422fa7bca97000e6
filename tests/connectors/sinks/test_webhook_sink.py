"""A webhook receiver's view: signed JSON availability records, within its rate limit, newest
version last, and a receiver's 400 dead-lettered with its message."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from connectors.emulators import WebhookEmulator
from connectors.sinks import InvalidSinkConfig, SinkMetrics, make_sink
from streams.core.catalog import Channel
from tests.connectors.sinks.sink_fakes import channel_record, deliver


async def test_records_arrive_signed_within_the_rate_limit_newest_last() -> None:
    async with WebhookEmulator(rate=40, burst=5) as pos:
        records = [channel_record(f"SKU-{i}", v, v) for v in range(1, 4) for i in range(20)]
        _, letters = await deliver(pos, "webhook", records)
    assert letters == []
    assert pos.throttled == 0
    assert {sku: r.version for sku, r in pos.records.items()} == {f"SKU-{i}": 3 for i in range(20)}
    assert all(versions == sorted(set(versions)) for versions in pos.history.values())
    assert pos.calls() == 20


async def test_a_forged_or_unsigned_post_is_refused() -> None:
    async with WebhookEmulator() as pos, aiohttp.ClientSession() as session:
        unsigned = await session.post(pos.url + pos.path, data=b"{}")
        forged = await session.post(
            pos.url + pos.path,
            data=b"{}",
            headers={"X-Inventory-Timestamp": "1", "X-Inventory-Signature": "sha256=00"},
        )
    assert unsigned.status == 401 and forged.status == 401
    assert pos.records == {}


async def test_a_wrong_secret_is_retried_not_dead_lettered_and_a_400_is_dead_lettered() -> None:
    async with WebhookEmulator() as pos:
        pos.path = "/availability"
        pos.fail_next(1, status=400)
        pos.fail_next(2, status=401)
        records = [channel_record("A", 1, 1), channel_record("B", 1, 1)]
        _, letters = await deliver(pos, "webhook", records)
    assert [sku for sku, _ in letters] == ["A"]
    assert "HTTP 400" in letters[0][1]
    assert set(pos.records) == {"B"}


class SlowNetworkReceiver(WebhookEmulator):
    """Each request reaches the rate limiter after a random delay of up to 1.6 tokens' time."""

    async def _receive(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self._jitter.uniform(0.0, 1.6 / self.rate))
        return await super()._receive(request)

    _jitter = random.Random(3)


async def test_the_full_rate_is_used_and_never_exceeded_however_requests_are_delayed() -> None:
    async with SlowNetworkReceiver(rate=20, burst=2) as pos:
        records = [channel_record(f"SKU-{i}", 1, 1) for i in range(40)]
        started = time.monotonic()
        _, letters = await deliver(pos, "webhook", records)
        elapsed = time.monotonic() - started
    assert letters == [] and len(pos.records) == 40
    assert pos.throttled == 0
    assert elapsed < 40 / 20 * 1.5  # the stated rate, not a safety margin under it


def webhook_channel(**settings: object) -> Channel:
    return Channel.model_validate(
        {"id": "pos", "type": "pos", "locations": ["wh"], "url": "https://pos.example/a"}
        | {"secret": "s"}
        | settings
    )


def test_values_settle_by_default_and_the_hold_cannot_be_shorter_than_the_settle_time() -> None:
    metrics = SinkMetrics(CollectorRegistry())
    sink = make_sink(webhook_channel(), metrics)
    assert (sink.settle, sink.max_hold) == (1.0, 3.0)  # type: ignore[attr-defined]
    off = make_sink(webhook_channel(settle_seconds=0), metrics)
    assert off.settle == 0.0  # type: ignore[attr-defined]
    with pytest.raises(InvalidSinkConfig, match="settle_seconds"):
        make_sink(webhook_channel(settle_seconds=5, max_hold_seconds=2), metrics)
