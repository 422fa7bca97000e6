"""A webhook receiver's view: signed JSON availability records, within its rate limit, newest
version last, and a receiver's 400 dead-lettered with its message."""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from connectors.emulators import WebhookEmulator
from connectors.emulators.base import Handler
from connectors.sinks import InvalidSinkConfig, SinkMetrics, make_sink
from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
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
    assert (sink.settle, sink.max_hold) == (1.0, 3.0)
    off = make_sink(webhook_channel(settle_seconds=0), metrics)
    assert off.settle == 0.0
    with pytest.raises(InvalidSinkConfig, match="settle_seconds"):
        make_sink(webhook_channel(settle_seconds=5, max_hold_seconds=2), metrics)


# ---- batches: records_per_post above 1 --------------------------------------------------------


class HeaderLog(WebhookEmulator):
    """Keeps the Idempotency-Key of every POST, failed by an injected outage or not."""

    keys: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.keys = []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        return await super()._middleware(request, handler)


async def test_a_batch_receiver_gets_every_newest_value_in_a_few_signed_posts() -> None:
    async with WebhookEmulator(rate=5, burst=2) as pos:
        records = [channel_record(f"SKU-{i}", v, v) for v in range(1, 4) for i in range(120)]
        _, letters = await deliver(pos, "webhook", records, records_per_post=50)
    assert letters == []
    assert {sku: r.version for sku, r in pos.records.items()} == {f"SKU-{i}": 3 for i in range(120)}
    bodies = [json.loads(r.body) for r in pos.requests]
    assert [len(body["records"]) for body in bodies] == [50, 50, 20]  # 120 SKUs, 3 POSTs
    assert pos.throttled == 0
    assert all(versions == [3] for versions in pos.history.values())


async def test_a_batch_retried_after_an_outage_keeps_its_idempotency_key() -> None:
    async with HeaderLog() as pos:
        pos.fail_next(1, status=503)
        pos.fail_next(1, status=429, retry_after=0.05)
        records = [channel_record(f"SKU-{i}", 7, 1) for i in range(10)]
        _, letters = await deliver(pos, "webhook", records, records_per_post=10)
    assert letters == [] and len(pos.records) == 10
    assert len(pos.keys) == 3 and len(set(pos.keys)) == 1  # two failed tries, then the same POST
    assert pos.keys[0].startswith("shop:batch:")


async def test_a_changed_batch_gets_a_new_idempotency_key() -> None:
    async with HeaderLog() as pos:
        first = [channel_record(f"SKU-{i}", 1, 1) for i in range(5)]
        await deliver(pos, "webhook", first, records_per_post=10)
        second = [channel_record(f"SKU-{i}", 2, 0) for i in range(5)]
        await deliver(pos, "webhook", second, records_per_post=10)
    assert len(pos.keys) == 2 and pos.keys[0] != pos.keys[1]
    assert {r.available for r in pos.records.values()} == {0}


async def test_a_batch_larger_than_the_receiver_takes_goes_again_in_halves_and_stays_smaller() -> (
    None
):
    async with WebhookEmulator(max_records_per_post=10) as pos:
        records = [channel_record(f"SKU-{i}", 1, 1) for i in range(60)]
        engine, letters = await deliver(pos, "webhook", records, records_per_post=25)
    assert letters == []
    assert {sku: r.version for sku, r in pos.records.items()} == {f"SKU-{i}": 1 for i in range(60)}
    sizes = [(len(json.loads(r.body)["records"]), r.answered) for r in pos.requests]
    refused = [size for size, status in sizes if status == 413]
    assert refused == [25, 12]  # 25 refused, then 12, then at most 6 per POST
    assert engine.sink.max_batch == 6
    taken = [size for size, status in sizes if status == 200]
    assert sum(taken) == 60 and max(taken) == 6
    assert all(versions == [1] for versions in pos.history.values())  # each value taken once


async def test_a_single_record_too_large_for_the_receiver_is_dead_lettered_with_its_answer() -> (
    None
):
    async with WebhookEmulator(max_body_bytes=100) as pos:
        records = [channel_record(f"SKU-{i}", 1, 1) for i in range(3)]
        _, letters = await deliver(pos, "webhook", records, records_per_post=3)
    assert pos.records == {}
    assert sorted(sku for sku, _ in letters) == ["SKU-0", "SKU-1", "SKU-2"]
    assert all("HTTP 413" in reason and "at most 100" in reason for _, reason in letters)
    assert [r.answered for r in pos.requests] == [413] * 4  # all 3, then each alone


async def test_the_receiver_refuses_a_batch_that_names_a_sku_twice() -> None:
    async with WebhookEmulator() as pos, aiohttp.ClientSession() as session:
        record = json.loads(channel_record("A", 1, 1).model_dump_json())
        body = json.dumps({"records": [record, record]}).encode()
        timestamp = str(int(time.time()))
        reply = await session.post(
            pos.url + pos.path,
            data=body,
            headers={
                SIGNATURE_HEADER: signature(pos.secret, timestamp, body),
                TIMESTAMP_HEADER: timestamp,
            },
        )
        assert reply.status == 400
        assert "twice" in (await reply.json())["error"]
    assert pos.records == {}


def test_batches_do_not_settle_unless_asked_and_the_batch_size_is_bounded() -> None:
    metrics = SinkMetrics(CollectorRegistry())
    batched = make_sink(webhook_channel(records_per_post=100), metrics)
    assert (batched.max_batch, batched.settle) == (100, 0.0)
    asked = make_sink(webhook_channel(records_per_post=100, settle_seconds=0.5), metrics)
    assert asked.settle == 0.5
    single = make_sink(webhook_channel(), metrics)
    assert (single.max_batch, single.settle) == (1, 1.0)
    for wrong in (0, 1001):
        with pytest.raises(InvalidSinkConfig, match="records_per_post"):
            make_sink(webhook_channel(records_per_post=wrong), metrics)


async def test_a_batch_with_a_sku_the_receiver_refuses_still_delivers_the_others() -> None:
    async with WebhookEmulator(unknown_skus={"SKU-7"}) as pos:
        records = [channel_record(f"SKU-{i}", 1, 1) for i in range(20)]
        _, letters = await deliver(pos, "webhook", records, records_per_post=20)
    assert [sku for sku, _ in letters] == ["SKU-7"]
    assert "HTTP 422" in letters[0][1] and "unknown channel_sku: SKU-7" in letters[0][1]
    assert sorted(pos.records) == sorted(f"SKU-{i}" for i in range(20) if i != 7)
    assert all(versions == [1] for versions in pos.history.values())  # each taken once
    # halves down to the refused record: 20, 10, 5, 3 and SKU-7 alone refused; the other halves
    # (0-4, 5-6, 8-9, 10-19) taken
    assert [r.answered for r in pos.requests] == [422, 422, 200, 422, 422, 200, 422, 200, 200]


async def test_a_batch_the_receiver_refuses_whole_is_dead_lettered_record_by_record() -> None:
    skus = [f"SKU-{i}" for i in range(4)]
    async with WebhookEmulator(unknown_skus=set(skus)) as pos:
        _, letters = await deliver(
            pos, "webhook", [channel_record(sku, 1, 1) for sku in skus], records_per_post=4
        )
    assert pos.records == {}
    assert sorted(sku for sku, _ in letters) == skus
    assert all(f"unknown channel_sku: {sku}" in reason for sku, reason in letters)
    assert pos.calls() == 2 * 4 - 1
