"""`inventory-streams connect`: the sink connectors and the webhook receiver as a process of their
own, as a deployment without `up` runs them beside its workers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from connectors.emulators import start_emulators
from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from streams.codec import make_codec
from streams.core.catalog import Catalog, Channel, Listing, load_catalog
from streams.core.models import StockAdjusted
from streams.runtime.broker import free_port
from streams.runtime.catalog_store import publish as publish_catalog
from streams.runtime.topics import (
    CATALOG,
    DLQ,
    EVENTS,
    availability_topic,
    ensure_topics,
    topic_specs,
)
from streams.settings import Settings
from tests.integration.test_sinks import publish, record, until, values
from tests.kafka_helpers import consume_all, create_topic, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

SKUS = [f"SKU-{i}" for i in range(6)]
SECRET = "store-7-secret"


def connect(bootstrap: str, catalog: Path | None, *extra: str, **env: str) -> subprocess.Popen[str]:
    """`inventory-streams connect` with that catalog file, or following inventory.catalog."""
    fixed = ["--catalog", str(catalog)] if catalog is not None else []
    return subprocess.Popen(
        [sys.executable, "-m", "inventory_streams.cli", "connect", *fixed, *extra],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def post_signed(url: str, body: bytes) -> tuple[int, str]:
    stamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRET, stamp, body)}
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    return response.status, await response.text()
            except aiohttp.ClientConnectionError:  # not listening yet
                assert time.monotonic() < deadline, "the webhook receiver never answered"
                await asyncio.sleep(0.2)


async def test_connect_delivers_availability_receives_webhooks_and_stops_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = Settings()
    ensure_topics(
        kafka_bootstrap, [s for s in topic_specs(settings, []) if s.name in (EVENTS, DLQ)]
    )
    channel = Channel(id=unique_name("pos-connect"), type="pos", locations=["wh"])
    create_topic(kafka_bootstrap, availability_topic(channel.id), partitions=2, compacted=True)
    listings = [
        Listing(channel=channel.id, channel_sku=sku, components=[{"sku": sku, "quantity": 1}])
        for sku in SKUS
    ]
    for version in range(1, 6):
        publish(kafka_bootstrap, channel, [record(channel.id, sku, version) for sku in SKUS])
    webhook_port, metrics_port = free_port(), free_port()
    async with start_emulators([channel], listings) as running:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(
            yaml.safe_dump(
                {
                    "locations": [{"id": "wh"}],
                    "channels": [c.model_dump(mode="json") for c in running.channels],
                    "listings": [dataclasses.asdict(x) for x in listings],
                }
            )
        )
        process = connect(
            kafka_bootstrap,
            catalog,
            "--host",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
            "--report-every",
            "1",
            WEBHOOK_SECRETS=json.dumps({"store-7": SECRET}),
            WEBHOOK_PORT=str(webhook_port),
        )
        try:
            emulator = running[channel.id]
            await until(
                lambda: values(emulator) == {sku: 5 * 3 for sku in SKUS}, 30, "final values"
            )
            event_id = unique_name("store-7-count")
            body = json.dumps(
                {
                    "event_id": event_id,
                    "type": "stock-adjusted",
                    "occurred_at": "2026-11-27T10:00:00Z",
                    "source": "store-7",
                    "sku": SKUS[0],
                    "location": "wh",
                    "mode": "count",
                    "quantity": 11,
                }
            ).encode()
            status, text = await post_signed(
                f"http://127.0.0.1:{webhook_port}/webhooks/store-7", body
            )
            assert status == 200, text
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as page,
            ):
                metrics = await page.text()
            assert f'inventory_sink_records_acked_total{{channel="{channel.id}"}}' in metrics
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output[-3000:]
    assert "connect: stopped" in output and "Traceback" not in output
    assert f"connect: stopped; acknowledged by {channel.id} 6;" in output
    codec = make_codec(settings)
    events = [codec.decode(m.value() or b"", EVENTS) for m in consume_all(kafka_bootstrap, EVENTS)]
    (landed,) = [e for e in events if e.event_id == event_id]
    assert isinstance(landed, StockAdjusted) and (landed.sku, landed.quantity) == (SKUS[0], 11)
    # the newest version of each SKU, once: nothing stale or repeated reached the channel
    assert emulator.history == {sku: [5] for sku in SKUS}


def test_connect_with_nothing_to_connect_says_so(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {"locations": [{"id": "wh"}], "channels": [{"id": "web", "locations": ["wh"]}]}
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "WEBHOOK_SECRETS"}
    done = subprocess.run(
        [sys.executable, "-m", "inventory_streams.cli", "connect", "--catalog", str(catalog)],
        env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "nothing to run: no catalog channel has connector settings" in done.stderr


async def test_connect_follows_the_catalog_a_channel_added_gets_a_sink_a_removed_one_stops(
    kafka_bootstrap: str,
) -> None:
    settings = Settings()
    ensure_topics(
        kafka_bootstrap, [s for s in topic_specs(settings, []) if s.name in (DLQ, CATALOG)]
    )
    old, new = (Channel(id=unique_name(n), type="pos", locations=["wh"]) for n in ("old", "new"))
    for channel in (old, new):
        create_topic(kafka_bootstrap, availability_topic(channel.id), partitions=2, compacted=True)
    listings = [
        Listing(channel=c.id, channel_sku=sku, components=[{"sku": sku, "quantity": 1}])
        for c in (old, new)
        for sku in SKUS
    ]

    def catalog(*channels: Channel) -> Catalog:
        names = {c.id for c in channels}
        return load_catalog(
            {
                "locations": [{"id": "wh"}],
                "channels": [c.model_dump(mode="json") for c in channels],
                "listings": [dataclasses.asdict(x) for x in listings if x.channel in names],
            }
        )

    async with start_emulators([old, new], listings) as running:
        pointed_old, pointed_new = running.channels
        first = publish_catalog(kafka_bootstrap, catalog(pointed_old))
        process = connect(kafka_bootstrap, None, "--report-every", "1", CATALOG_CHECK_SECONDS="0.5")
        try:
            publish(kafka_bootstrap, old, [record(old.id, sku, 1) for sku in SKUS])
            await until(lambda: len(values(running[old.id])) == len(SKUS), 30, "old channel")
            second = publish_catalog(kafka_bootstrap, catalog(pointed_new))
            assert second.version == first.version + 1
            publish(kafka_bootstrap, new, [record(new.id, sku, 1) for sku in SKUS])
            await until(lambda: len(values(running[new.id])) == len(SKUS), 30, "new channel")
            publish(kafka_bootstrap, old, [record(old.id, sku, 2) for sku in SKUS])
            await asyncio.sleep(3.0)  # a running sink would have sent these within a second
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output[-3000:]
    assert f"following {CATALOG}" in output
    assert f"sink {old.id}: removed in catalog version {second.version}" in output, output[-3000:]
    assert f"sink {new.id}: starting it (catalog version {second.version})" in output
    assert running[old.id].history == {sku: [1] for sku in SKUS}  # type: ignore[attr-defined]
    assert running[new.id].history == {sku: [1] for sku in SKUS}  # type: ignore[attr-defined]
