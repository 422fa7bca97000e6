"""Sink benchmark: a flash sale of availability changes through a real broker to each channel
emulator at its emulated limits; prints channel calls against the per-window minimum, latency
from availability record to channel acknowledgement, and staleness one window after the burst.

    .venv/bin/python bench/sinks.py [--changes 50000] [--skus 2000] [--rate 20000]
                                    [--channels shopify,amazon,webhook] [--json]

Definitions (printed too):
- calls: HTTP requests the emulator received after warm-up (every kind: mutations, lookups,
  patches, feed steps).
- minimum: what a clairvoyant coalescer needs under the same limit: every `window` seconds it
  sends each SKU changed since its last send once, in calls of at most `batch` items, never more
  calls than the window allows (leftovers wait for the next window).
- latency: for every produced record, from its Kafka timestamp to the acknowledgement of that
  version or a newer one of the same SKU.
- late after burst: SKUs whose value as of the burst's end was not acknowledged one window later.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer

from connectors.emulators import (
    AmazonEmulator,
    Emulator,
    ShopifyEmulator,
    WebhookEmulator,
    emulator_for,
    pointed_at,
)
from connectors.sinks import run_sink
from streams.codec import make_codec
from streams.core.catalog import Channel
from streams.core.models import Availability
from streams.runtime.broker import kafka_cluster
from streams.runtime.topics import TopicSpec, availability_topic, ensure_topics
from streams.settings import Settings

WARMUP = "WARMUP"
AS_OF = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Limit:
    """The emulated limit in one-window terms, for the minimum-calls model."""

    window: float  # seconds
    batch: int  # items per call
    first_window: int  # calls allowed in the first window (burst)
    per_window: int  # calls allowed in each later window
    text: str


def limit_of(emulator: Emulator) -> Limit:
    if isinstance(emulator, ShopifyEmulator):
        cost = emulator.mutation_cost
        return Limit(
            1.0,
            emulator.max_input_size,
            int(emulator.maximum_available // cost),
            int(emulator.restore_rate // cost),
            f"cost bucket {emulator.maximum_available:g} points, restore "
            f"{emulator.restore_rate:g}/s, mutation {cost} points, {emulator.max_input_size} items",
        )
    if isinstance(emulator, AmazonEmulator):
        return Limit(
            1.0,
            1,
            int(emulator.burst),
            int(emulator.rate),
            f"patchListingsItem {emulator.rate:g}/s burst {emulator.burst:g}; JSON_LISTINGS_FEED "
            f"5 per 5 min, processing {emulator.feed_processing_seconds:g}s (real: minutes)",
        )
    assert isinstance(emulator, WebhookEmulator)
    return Limit(
        1.0,
        1,
        int(emulator.burst),
        int(emulator.rate),
        f"{emulator.rate:g} POST/s burst {emulator.burst:g}",
    )


def minimum_calls(changes: list[tuple[float, str]], limit: Limit) -> int:
    """Calls of a clairvoyant per-window coalescer under `limit` (see the module docstring)."""
    if not changes:
        return 0
    pending: dict[str, None] = {}
    calls, i, start = 0, 0, changes[0][0]
    window_end, allowance = start + limit.window, limit.first_window
    while i < len(changes) or pending:
        while i < len(changes) and changes[i][0] < window_end:
            pending[changes[i][1]] = None
            i += 1
        used = min(allowance, math.ceil(len(pending) / limit.batch))
        for _ in range(min(len(pending), used * limit.batch)):
            pending.pop(next(iter(pending)))
        calls += used
        window_end += limit.window
        allowance = limit.per_window
    return calls


def workload(changes: int, skus: int, seed: int) -> Iterator[Availability]:
    """A flash sale: a few SKUs take most of the changes (Zipf-like), versions per SKU increase."""
    rng = random.Random(seed)
    names = [f"SKU-{i:05d}" for i in range(skus)]
    weights = [1 / (rank + 1) ** 0.8 for rank in range(skus)]
    version = dict.fromkeys(names, 0)
    stock = {name: rng.randint(50, 500) for name in names}
    # every SKU changes at least once, so every SKU's final value must reach the channel
    order = names + rng.choices(names, weights, k=changes - skus)
    rng.shuffle(order)
    for sku in order:
        version[sku] += 1
        stock[sku] = max(0, stock[sku] + rng.choice((-3, -2, -1, -1, -1, 1, 5)))
        yield Availability(
            channel="bench",
            channel_sku=sku,
            available=stock[sku],
            backorderable=0,
            restock_date=None,
            version=version[sku],
            as_of=AS_OF,
            cause_event_id=f"bench-{sku}-{version[sku]}",
        )


@dataclass
class Run:
    channel: str
    limit: Limit
    produced: list[tuple[float, str, int]] = field(default_factory=list)  # (ts, sku, version)
    acks: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # sku -> (v, t)
    calls: int = 0
    calls_by_kind: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    burst_seconds: float = 0.0
    drain_seconds: float = 0.0


def produce(bootstrap: str, topic: str, records: list[Availability], rate: float) -> list[float]:
    """Produce at `rate` records/s; the timestamps the records carry (seconds)."""
    codec = make_codec(Settings())
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "log_level": 0})
    stamps = []
    started = time.time()
    for i, record in enumerate(records):
        due = started + i / rate
        if (ahead := due - time.time()) > 0.002:
            time.sleep(ahead)
        now = time.time()
        producer.produce(
            topic,
            key=record.channel_sku.encode(),
            value=codec.encode(record, topic),
            timestamp=int(now * 1000),
        )
        stamps.append(int(now * 1000) / 1000)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(30):
        raise RuntimeError("records not acknowledged by the broker")
    return stamps


def kind_of(emulator: Emulator, path: str, body: bytes) -> str:
    if isinstance(emulator, ShopifyEmulator):
        return "mutation" if b"inventorySetQuantities(" in body else "lookup"
    if isinstance(emulator, AmazonEmulator):
        return "patch" if "/listings/" in path else "feed"
    return "post"


async def bench_channel(kind: str, args: argparse.Namespace, bootstrap: str) -> Run:
    settings = Settings()
    channel = Channel(
        id=f"bench-{kind}-{os.getpid()}-{time.time_ns() % 10**6}", type=kind, locations=["wh"]
    )
    topic = availability_topic(channel.id)
    ensure_topics(bootstrap, [TopicSpec(topic, settings.topic_partitions, compacted=True)])
    records = list(workload(args.changes, args.skus, args.seed))
    skus = sorted({r.channel_sku for r in records} | {WARMUP})
    limits: dict[str, Any] = (
        {"feed_processing_seconds": args.feed_seconds} if kind == "amazon" else {}
    )
    emulator = emulator_for(channel, skus, **limits)
    await emulator.start()
    pointed = pointed_at(channel, emulator)
    run = Run(kind, limit_of(emulator))

    def on_ack(record: Availability) -> None:
        run.acks.setdefault(record.channel_sku, []).append((record.version, time.time()))

    stop = asyncio.Event()
    task = asyncio.create_task(run_sink(pointed, settings, bootstrap, stop, on_ack=on_ack))
    try:
        warm = Availability(**{**records[0].model_dump(), "channel_sku": WARMUP, "version": 1})
        await asyncio.to_thread(produce, bootstrap, topic, [warm], 1.0)
        while WARMUP not in run.acks:  # the consumer group has joined and the channel answers
            await asyncio.sleep(0.05)
        before = len(emulator.requests)
        started = time.time()
        stamps = await asyncio.to_thread(produce, bootstrap, topic, records, args.rate)
        run.burst_seconds = time.time() - started
        run.produced = [(t, r.channel_sku, r.version) for t, r in zip(stamps, records, strict=True)]
        final = {r.channel_sku: r.version for r in records}
        deadline = time.monotonic() + args.timeout
        while any(run.acks.get(sku, [(0, 0.0)])[-1][0] < v for sku, v in final.items()):
            if time.monotonic() > deadline:
                print(f"  {kind}: not all final values acknowledged in {args.timeout}s", flush=True)
                break
            await asyncio.sleep(0.05)
        run.drain_seconds = time.time() - started - run.burst_seconds
        for received in emulator.requests[before:]:
            name = kind_of(emulator, received.path, received.body)
            run.calls_by_kind[name] = run.calls_by_kind.get(name, 0) + 1
        run.calls = len(emulator.requests) - before
        run.throttled = emulator.throttled
        return run
    finally:
        stop.set()
        await task
        await emulator.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(run: Run) -> dict[str, Any]:
    latencies = []
    for stamp, sku, version in run.produced:
        acks = run.acks.get(sku, [])
        i = bisect_left([v for v, _ in acks], version)
        if i < len(acks):
            latencies.append(acks[i][1] - stamp)
    burst_end = max(t for t, _, _ in run.produced)
    as_of_end: dict[str, int] = {}
    for _, sku, version in run.produced:
        as_of_end[sku] = version
    late, worst = 0, 0.0
    for sku, version in as_of_end.items():
        acks = run.acks.get(sku, [])
        i = bisect_left([v for v, _ in acks], version)
        acked_at = acks[i][1] if i < len(acks) else math.inf
        if acked_at > burst_end + run.limit.window:
            late += 1
            worst = max(worst, acked_at - burst_end)
    minimum = minimum_calls([(t, s) for t, s, _ in run.produced], run.limit)
    return {
        "channel": run.channel,
        "limit": run.limit.text,
        "changes": len(run.produced),
        "skus": len(as_of_end),
        "burst_seconds": round(run.burst_seconds, 2),
        "drain_after_burst_seconds": round(run.drain_seconds, 2),
        "calls": run.calls,
        "calls_by_kind": run.calls_by_kind,
        "minimum_calls": minimum,
        "calls_vs_minimum": round(run.calls / minimum, 3) if minimum else None,
        "throttled": run.throttled,
        "latency_p50_seconds": round(percentile(latencies, 0.50), 3),
        "latency_p99_seconds": round(percentile(latencies, 0.99), 3),
        "latency_max_seconds": round(max(latencies), 3),
        "unacknowledged_records": len(run.produced) - len(latencies),
        "late_skus_one_window_after_burst": late,
        "worst_staleness_after_burst_seconds": None if late == 0 else round(worst, 2),
    }


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
    }


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = Settings()
    results = []
    with kafka_cluster(settings) as bootstrap:
        for kind in args.channels.split(","):
            print(f"running {kind} ...", file=sys.stderr, flush=True)
            results.append(summarize(await bench_channel(kind, args, bootstrap)))
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    info = machine()
    broker = "configured" if Settings().kafka_bootstrap_servers else "embedded Tansu"
    print(f"machine: {info['cpu']} x{info['cpus']}, {info['platform']}, Python {info['python']}")
    print(
        f"broker: {broker}; workload: {args.changes} changes over {args.skus} SKUs, "
        f"produced at {args.rate:g}/s (Zipf-like: a few SKUs take most changes)"
    )
    for r in results:
        print(f"\n[{r['channel']}] {r['limit']}")
        by_kind = ", ".join(f"{k} {v}" for k, v in sorted(r["calls_by_kind"].items()))
        print(
            f"  calls: {r['calls']} ({by_kind}); per-window minimum {r['minimum_calls']}"
            f" -> {r['calls_vs_minimum']}x; throttled by the channel: {r['throttled']}"
        )
        if "mutation" in r["calls_by_kind"]:
            mutations = r["calls_by_kind"]["mutation"]
            print(
                f"  mutations alone (lookups resolve item ids once per process): {mutations}"
                f" -> {mutations / r['minimum_calls']:.3f}x the minimum"
            )
        print(
            f"  latency record -> channel ack: p50 {r['latency_p50_seconds']}s, "
            f"p99 {r['latency_p99_seconds']}s, max {r['latency_max_seconds']}s"
        )
        print(
            f"  burst {r['burst_seconds']}s, drained {r['drain_after_burst_seconds']}s after it; "
            f"SKUs not current one window after the burst: "
            f"{r['late_skus_one_window_after_burst']}"
            + (
                f" (worst {r['worst_staleness_after_burst_seconds']}s)"
                if r["late_skus_one_window_after_burst"]
                else ""
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=20_000, help="records produced per second")
    parser.add_argument("--channels", default="shopify,amazon,webhook")
    parser.add_argument(
        "--feed-seconds",
        type=float,
        default=1.0,
        help="emulated JSON_LISTINGS_FEED processing time",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps({"machine": machine(), "results": outcome}, indent=2))
    else:
        report(outcome, arguments)
