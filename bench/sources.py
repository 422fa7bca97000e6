"""Throughput of the source connectors into Kafka (acks=all, idempotent), on a real broker.

    .venv/bin/python bench/sources.py [--rows 200000] [--requests 3000] [--concurrency 32]

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the embedded broker (on the same machine, so it
competes for the same cores). Prints, with the machine it ran on:

- CSV import: rows/s from opening the file to the broker's acknowledgement of the last record
  (goal: >= 20,000 rows/s), with 1% malformed rows going to the DLQ;
- webhook: signed deliveries/s and events/s through HTTP (a client in another process), each
  answered after the broker's acknowledgement, with p50/p99 latency; for Shopify orders, for
  single SPEC events, and for SPEC events in batches of 100 per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import ClientSession, TCPConnector, web

from bench.core import machine
from connectors.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from connectors.sources.batch import import_csv
from connectors.sources.shopify import ShopifyAdapter, ShopifySourceConfig, sign
from connectors.sources.webhook import WebhookSource, make_app
from streams.runtime import EmbeddedBroker, free_port
from streams.runtime.producer import SourceProducer
from streams.runtime.topics import TopicSpec, ensure_topics
from streams.settings import Settings

SECRET = "bench-secret"
MAPPING = """
source: bench-erp
kind: adjustments
columns: {id: [doc, line], sku: item, location: site, quantity: qty, unit: uom,
          occurred_at: posted_at, reason: reason}
units: {EA: 1, CS: 12}
unmapped_skus: keep
locations: {"01": wh-east, "02": store-12}
reasons: {"RCV": {reason: receipt}, "SHR": {reason: shrink, sign: -1}}
"""


def write_csv(path: Path, rows: int) -> int:
    """`rows` data rows over 2,000 SKUs and 2 sites, 1% malformed; returns the bad count."""
    rnd = random.Random(7)
    bad = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("doc,line,item,site,qty,uom,posted_at,reason\n")
        for n in range(rows):
            qty = str(rnd.randint(1, 40))
            if n % 100 == 99:
                qty, bad = "n/a", bad + 1
            out.write(
                f"D{n // 20},{n % 20 + 1},SKU-{rnd.randrange(2000):05d},0{rnd.randint(1, 2)},{qty},"
                f"{rnd.choice(['EA', 'CS'])},2026-11-23T{n % 24:02d}:15:00Z,"
                f"{rnd.choice(['RCV', 'SHR'])}\n"
            )
    return bad


def bench_csv(bootstrap: str, events: str, dlq: str, rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path, mapping = Path(tmp) / "movements.csv", Path(tmp) / "mapping.yaml"
        bad = write_csv(path, rows)
        mapping.write_text(MAPPING)
        producer = SourceProducer(bootstrap, events_topic=events, dlq_topic=dlq)
        cpu = time.process_time()
        report = import_csv(path, mapping, producer, progress=False)
        cpu = time.process_time() - cpu
        producer.close()
    assert report.tally.dead_lettered == bad and report.tally.produced == rows - bad
    return {
        "rows": rows,
        "seconds": report.seconds,
        "rows_per_s": report.rows_per_second,
        "cpu_us_per_row": cpu / rows * 1e6,
        "dead_lettered": report.tally.dead_lettered,
    }


# ---- webhook: the client runs in another process so it does not share our interpreter --------


def shopify_order(n: int) -> bytes:
    order = {
        "id": 9_000_000 + n,
        "name": f"#{n}",
        "created_at": "2026-11-23T10:04:12-05:00",
        "line_items": [
            {"id": 10 * n + 1, "sku": f"SKU-{n % 2000:05d}", "quantity": 1, "gift_card": False},
            {"id": 10 * n + 2, "sku": f"SKU-{(n * 7) % 2000:05d}", "quantity": 2},
        ],
    }
    return json.dumps(order).encode()


def spec_events(n: int, per_request: int) -> bytes:
    lines = []
    for k in range(per_request):
        lines.append(
            json.dumps(
                {
                    "event_id": f"bench-{n}-{k}",
                    "type": "stock-adjusted",
                    "occurred_at": "2026-11-23T10:00:00Z",
                    "source": "bench-wms",
                    "sku": f"SKU-{(n + k) % 2000:05d}",
                    "location": "wh-east",
                    "mode": "delta",
                    "quantity": 1 + k % 5,
                }
            )
        )
    return "\n".join(lines).encode()


async def _drive(url: str, kind: str, requests: int, concurrency: int, per: int) -> list[float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)

    async def worker(session: ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            if kind == "shopify":
                body = shopify_order(n)
                headers = {
                    "X-Shopify-Topic": "orders/create",
                    "X-Shopify-Hmac-Sha256": sign(SECRET, body),
                    "X-Shopify-Webhook-Id": uuid.uuid4().hex,
                }
                path = "/webhooks/bench-shop"
            else:
                body = spec_events(n, per)
                stamp = str(int(time.time()))
                headers = {
                    TIMESTAMP_HEADER: stamp,
                    SIGNATURE_HEADER: signature(SECRET, stamp, body),
                }
                path = "/webhooks/bench-wms"
            started = time.perf_counter()
            async with session.post(url + path, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {await response.text()}")
            latencies.append(time.perf_counter() - started)

    async with ClientSession(connector=TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies


def _client(url: str, kind: str, requests: int, concurrency: int, per: int, out: Any) -> None:
    started = time.perf_counter()
    latencies = asyncio.run(_drive(url, kind, requests, concurrency, per))
    out.put((time.perf_counter() - started, sorted(latencies)))


async def bench_webhook(
    bootstrap: str, events: str, dlq: str, requests: int, concurrency: int
) -> list[dict[str, Any]]:
    settings = Settings(webhook_secrets={"bench-shop": SECRET, "bench-wms": SECRET})
    producer = SourceProducer(bootstrap, events_topic=events, dlq_topic=dlq, linger_ms=2)
    shop = ShopifyAdapter(ShopifySourceConfig(source="bench-shop", channel="shopify-us"))
    sources = {
        "bench-shop": WebhookSource("bench-shop", "shopify", SECRET, shopify=shop),
        "bench-wms": WebhookSource("bench-wms", "events", SECRET),
    }
    app = make_app(settings, producer, sources=sources)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    results = []
    context = multiprocessing.get_context("spawn")
    try:
        for kind, per, count in (
            ("shopify", 1, requests),
            ("events", 1, requests),
            ("events", 100, max(1, requests // 10)),
        ):
            out = context.Queue()
            client = context.Process(
                target=_client,
                args=(f"http://127.0.0.1:{port}", kind, count, concurrency, per, out),
            )
            client.start()
            while out.empty():
                await asyncio.sleep(0.05)
            seconds, latencies = out.get()
            client.join()
            results.append(
                {
                    "kind": "shopify orders/create" if kind == "shopify" else f"events x{per}",
                    "requests": count,
                    "requests_per_s": count / seconds,
                    "events_per_s": count * (1 if kind == "shopify" else per) / seconds,
                    "p50_ms": latencies[len(latencies) // 2] * 1000,
                    "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
                }
            )
    finally:
        await runner.cleanup()
        producer.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    configured = Settings().kafka_bootstrap_servers
    broker = None if configured else EmbeddedBroker()
    if broker is not None:
        broker.start()
    try:
        bootstrap = configured or broker.bootstrap_servers  # type: ignore[union-attr]
        prefix = f"bench-sources-{uuid.uuid4().hex[:8]}"
        events, dlq = f"{prefix}.inventory.events", f"{prefix}.inventory.dlq"
        ensure_topics(bootstrap, [TopicSpec(events, 4), TopicSpec(dlq, 4)])
        print(f"machine: {machine()}")
        print(f"broker:  {'configured ' + configured if configured else 'embedded tansu'}")
        csv = bench_csv(bootstrap, events, dlq, args.rows)
        verdict = "meets" if csv["rows_per_s"] >= 20_000 else "BELOW"
        print(
            f"csv import: {csv['rows']:,} rows ({csv['dead_lettered']:,} to the DLQ) in "
            f"{csv['seconds']:.2f} s = {csv['rows_per_s']:,.0f} rows/s into Kafka "
            f"({csv['cpu_us_per_row']:.1f} us CPU/row in this process; {verdict} the goal "
            "of 20,000 rows/s)"
        )
        for row in asyncio.run(
            bench_webhook(bootstrap, events, dlq, args.requests, args.concurrency)
        ):
            print(
                f"webhook {row['kind']:<22} {row['requests']:>6,} requests: "
                f"{row['requests_per_s']:>8,.0f} req/s, {row['events_per_s']:>8,.0f} events/s, "
                f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms "
                f"(concurrency {args.concurrency})"
            )
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
