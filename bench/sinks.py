"""Sink benchmark: a flash sale of availability changes through a real broker to each channel
emulator at its emulated limits; prints channel calls against the per-window minimum, latency
from availability record to channel acknowledgement, and staleness one window after the burst.

    .venv/bin/python bench/sinks.py [--changes 50000] [--skus 2000] [--rate 20000]
                                    [--channels shopify,amazon,webhook,webhook-batch]
                                    [--webhook-settle S] [--webhook-batch N] [--json]

`webhook` is a receiver of one record per POST (the connector's default); `webhook-batch` the same
receiver with the sink sending `records_per_post` = N (100) records per POST.

Definitions (printed too):
- calls: HTTP requests the emulator received after warm-up (every kind: mutations, lookups,
  patches, feed steps).
- minimum: what a clairvoyant coalescer needs under the same limit: every `window` seconds it
  sends each SKU changed since its last send once, in calls of at most `batch` items, never more
  calls than the window allows (leftovers wait for the next window).
- latency: for every produced record, from its Kafka timestamp to the acknowledgement of that
  version or a newer one of the same SKU.
- current after: from the burst's end (the last record's timestamp) until the channel acknowledged
  the final value of every SKU.
- lower bound: the earliest any sender could do that under the same limit, knowing the future:
  each SKU's final value exists only from its timestamp on; for every suffix of those in time
  order, the calls they need after its first one, less a full bucket, paced at the limit's rate
  (Shopify: a call carries 250 SKUs, so about nothing; a webhook: 2,000 POSTs at 20/s; a batch
  webhook: 20 POSTs of 100, inside one bucket, so about nothing). A channel
  with a bulk path (Amazon's feed) may instead send everything in one job: its processing time.
- goal: current after <= lower bound + one window; "late" counts the SKUs that were not. For
  comparison, when the per-window coalescer of the call minimum would have sent its last call
  (it sends at window ends, and a value it sent may change again before the burst ends).

Shopify is measured warm, as a running sink meets a flash sale: every SKU is written once before
the burst (resolving inventory item ids takes lookups once per process; their count is printed),
then the cost bucket is let refill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import random
import sys
import time
from bisect import bisect_left
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
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
from connectors.sinks.http import connector_config
from connectors.sinks.webhook import WebhookConfig
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
    bulk_seconds: float | None = None  # one bulk job takes any number of SKUs in this long

    @property
    def rate(self) -> float:
        return self.per_window / self.window

    def lower_bound(self, releases: list[float]) -> float:
        """Earliest time every SKU can hold its final value; `releases`: when each final existed.

        Keys released at or after the i-th (sorted) cannot go before it: they need their calls
        after it, and the bucket holds at most `first_window` calls then, the rest come at `rate`.
        """
        times = sorted(releases)
        n, bound = len(times), times[-1]
        for i, at in enumerate(times):
            calls = math.ceil((n - i) / self.batch)
            bound = max(bound, at + (calls - self.first_window) / self.rate)
        if self.bulk_seconds is not None:
            bound = min(bound, times[-1] + self.bulk_seconds)
        return bound


def limit_of(emulator: Emulator, records_per_post: int = 1) -> Limit:
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
            emulator.feed_processing_seconds,
        )
    assert isinstance(emulator, WebhookEmulator)
    per_post = f", {records_per_post} records per POST" if records_per_post > 1 else ""
    return Limit(
        1.0,
        records_per_post,
        int(emulator.burst),
        int(emulator.rate),
        f"{emulator.rate:g} POST/s burst {emulator.burst:g}{per_post}",
    )


def minimum_calls(changes: list[tuple[float, str]], limit: Limit) -> tuple[int, float]:
    """Calls of a clairvoyant per-window coalescer under `limit` (see the module docstring), and
    when it sent its last one (it sends at the end of each window)."""
    if not changes:
        return 0, 0.0
    pending: dict[str, None] = {}
    calls, i, start, last = 0, 0, changes[0][0], 0.0
    window_end, allowance = start + limit.window, limit.first_window
    while i < len(changes) or pending:
        while i < len(changes) and changes[i][0] < window_end:
            pending[changes[i][1]] = None
            i += 1
        used = min(allowance, math.ceil(len(pending) / limit.batch))
        for _ in range(min(len(pending), used * limit.batch)):
            pending.pop(next(iter(pending)))
        if used:
            calls, last = calls + used, window_end
        window_end += limit.window
        allowance = limit.per_window
    return calls, last


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
    warmup_calls: dict[str, int] = field(default_factory=dict)
    last_read: float = 0.0  # when the sink read the burst's last record (time.time())
    policy: str = ""  # the sink's own pacing settings worth printing (webhook: settling)


def encoded(topic: str, records: list[Availability]) -> list[tuple[bytes, bytes]]:
    codec = make_codec(Settings())
    return [(r.channel_sku.encode(), codec.encode(r, topic)) for r in records]


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float
) -> list[float]:
    """Produce (key, value) pairs at `rate` records/s; the timestamps they carry (seconds).

    Runs in its own process: the stream workers that write availability never share the sink's
    interpreter, and a producer thread here would take the GIL from the sink under test.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "log_level": 0})
    stamps = []
    started = time.time()
    for i, (key, value) in enumerate(records):
        due = started + i / rate
        if (ahead := due - time.time()) > 0.002:
            time.sleep(ahead)
        now = time.time()
        producer.produce(topic, key=key, value=value, timestamp=int(now * 1000))
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


async def bench_channel(
    kind: str, args: argparse.Namespace, bootstrap: str, producer: ProcessPoolExecutor
) -> Run:
    settings = Settings()
    batch = args.webhook_batch if kind == "webhook-batch" else 1
    channel = Channel(
        id=f"bench-{kind}-{os.getpid()}-{time.time_ns() % 10**6}",
        type="webhook" if batch > 1 else kind,
        locations=["wh"],
    )
    topic = availability_topic(channel.id)
    ensure_topics(bootstrap, [TopicSpec(topic, settings.topic_partitions, compacted=True)])
    records = list(workload(args.changes, args.skus, args.seed))
    skus = sorted({r.channel_sku for r in records} | {WARMUP})
    limits: dict[str, Any] = {}
    if kind == "amazon":
        limits["feed_processing_seconds"] = args.feed_seconds
    if batch > 1:  # a receiver that takes the batches the sink is told to send
        limits["max_records_per_post"] = batch
    emulator = emulator_for(channel, skus, **limits)
    await emulator.start()
    pointed = pointed_at(channel, emulator)
    run = Run(kind, limit_of(emulator, batch))
    if isinstance(emulator, WebhookEmulator):
        extra: dict[str, Any] = {"records_per_post": batch} if batch > 1 else {}
        if args.webhook_settle is not None:  # e.g. 0: the engine without settling, same load
            extra["settle_seconds"] = args.webhook_settle
        pointed = Channel.model_validate({**pointed.model_dump(), **extra})
        config = connector_config(pointed, WebhookConfig)
        run.policy = f"settle {config.settle_seconds:g}s, max hold {config.max_hold_seconds:g}s"

    def on_ack(record: Availability) -> None:
        run.acks.setdefault(record.channel_sku, []).append((record.version, time.time()))

    stop = asyncio.Event()
    task = asyncio.create_task(run_sink(pointed, settings, bootstrap, stop, on_ack=on_ack))
    try:
        warm = Availability(**{**records[0].model_dump(), "channel_sku": WARMUP, "version": 1})
        warming = [warm]
        if isinstance(emulator, ShopifyEmulator):  # a running sink knows its items' ids
            warming += [
                Availability(**{**warm.model_dump(), "channel_sku": sku, "version": 0})
                for sku in skus
                if sku != WARMUP
            ]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            producer, produce, bootstrap, topic, encoded(topic, warming), 5000.0
        )
        while any(r.channel_sku not in run.acks for r in warming):  # the group joined, all acked
            await asyncio.sleep(0.05)
        for received in emulator.requests:
            name = kind_of(emulator, received.path, received.body)
            run.warmup_calls[name] = run.warmup_calls.get(name, 0) + 1
        if isinstance(emulator, ShopifyEmulator):  # let the cost bucket refill
            while emulator.available_points() < emulator.maximum_available - 1:
                await asyncio.sleep(0.2)
        before = len(emulator.requests)
        burst = encoded(topic, records)
        started = time.time()
        stamps = await loop.run_in_executor(producer, produce, bootstrap, topic, burst, args.rate)
        run.burst_seconds = time.time() - started
        run.produced = [(t, r.channel_sku, r.version) for t, r in zip(stamps, records, strict=True)]
        final = {r.channel_sku: r.version for r in records}
        deadline = time.monotonic() + args.timeout
        while any(run.acks.get(sku, [(0, 0.0)])[-1][0] < v for sku, v in final.items()):
            if time.monotonic() > deadline:
                print(f"  {kind}: not all final values acknowledged in {args.timeout}s", flush=True)
                break
            await asyncio.sleep(0.05)
        for received in emulator.requests[before:]:
            name = kind_of(emulator, received.path, received.body)
            run.calls_by_kind[name] = run.calls_by_kind.get(name, 0) + 1
        run.calls = len(emulator.requests) - before
        run.throttled = emulator.throttled
        return run
    finally:
        stop.set()
        engine = await task
        run.last_read = engine.last_offer_at + time.time() - time.monotonic()
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
    final: dict[str, tuple[int, float]] = {}  # sku -> (final version, when it was produced)
    for stamp, sku, version in run.produced:
        final[sku] = (version, stamp)
    bound = run.limit.lower_bound([stamp for _, stamp in final.values()]) - burst_end
    allowed = burst_end + bound + run.limit.window
    late, current = 0, 0.0
    for sku, (version, _) in final.items():
        acks = run.acks.get(sku, [])
        i = bisect_left([v for v, _ in acks], version)
        acked_at = acks[i][1] if i < len(acks) else math.inf
        current = max(current, acked_at - burst_end)
        late += acked_at > allowed
    minimum, reference_end = minimum_calls([(t, s) for t, s, _ in run.produced], run.limit)
    return {
        "channel": run.channel,
        "limit": run.limit.text,
        "policy": run.policy,
        "changes": len(run.produced),
        "skus": len(final),
        "burst_seconds": round(run.burst_seconds, 2),
        "calls": run.calls,
        "calls_by_kind": run.calls_by_kind,
        "minimum_calls": minimum,
        "calls_vs_minimum": round(run.calls / minimum, 3) if minimum else None,
        "throttled": run.throttled,
        "latency_p50_seconds": round(percentile(latencies, 0.50), 3),
        "latency_p99_seconds": round(percentile(latencies, 0.99), 3),
        "latency_max_seconds": round(max(latencies), 3),
        "unacknowledged_records": len(run.produced) - len(latencies),
        "current_after_burst_seconds": round(current, 2),
        # broker delivery and consumer: when the sink read the burst's last record
        "last_record_read_after_burst_seconds": round(run.last_read - burst_end, 2),
        "lower_bound_after_burst_seconds": round(bound, 2),
        "excess_over_lower_bound_seconds": round(current - bound, 2),
        # the per-window coalescer behind minimum_calls, for comparison (no bulk path)
        "reference_coalescer_current_after_burst_seconds": round(reference_end - burst_end, 2),
        "window_seconds": run.limit.window,
        "late_skus_after_bound_plus_window": late,
        "staleness_goal_met": late == 0,
        "warmup_calls": run.warmup_calls,
    }


def machine() -> dict[str, Any]:
    """CPU, cores and load: a figure means little without what else ran on the machine."""
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
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = Settings()
    results = []
    spawn = multiprocessing.get_context("spawn")
    with kafka_cluster(settings) as bootstrap, ProcessPoolExecutor(1, mp_context=spawn) as pool:
        for kind in args.channels.split(","):
            print(f"running {kind} ...", file=sys.stderr, flush=True)
            results.append(summarize(await bench_channel(kind, args, bootstrap, pool)))
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    info = machine()
    broker = "configured" if Settings().kafka_bootstrap_servers else "embedded Tansu"
    load = " ".join(f"{x:.2f}" for x in info["load_average"])
    print(
        f"machine: {info['cpu']} x{info['cpus']}, {info['platform']}, Python {info['python']}, "
        f"load average {load} (the cores may be shared)"
    )
    print(
        f"broker: {broker}; workload: {args.changes} changes over {args.skus} SKUs, "
        f"produced at {args.rate:g}/s (Zipf-like: a few SKUs take most changes)"
    )
    for r in results:
        policy = f"; {r['policy']}" if r["policy"] else ""
        print(f"\n[{r['channel']}] {r['limit']}{policy}")
        by_kind = ", ".join(f"{k} {v}" for k, v in sorted(r["calls_by_kind"].items()))
        print(
            f"  calls: {r['calls']} ({by_kind}); per-window minimum {r['minimum_calls']}"
            f" -> {r['calls_vs_minimum']}x; throttled by the channel: {r['throttled']}"
        )
        if "mutation" in r["calls_by_kind"]:
            mutations = r["calls_by_kind"]["mutation"]
            print(
                f"  mutations alone: {mutations} -> {mutations / r['minimum_calls']:.3f}x the"
                f" minimum; warm-up before the burst (ids resolved once per process):"
                f" {', '.join(f'{k} {v}' for k, v in sorted(r['warmup_calls'].items()))}"
            )
        print(
            f"  latency record -> channel ack: p50 {r['latency_p50_seconds']}s, "
            f"p99 {r['latency_p99_seconds']}s, max {r['latency_max_seconds']}s"
        )
        print(
            f"  burst {r['burst_seconds']}s; the sink read its last record"
            f" {r['last_record_read_after_burst_seconds']}s after it (broker and consumer)"
        )
        print(
            f"  every SKU current {r['current_after_burst_seconds']}s"
            f" after the burst; lower bound under the limit {r['lower_bound_after_burst_seconds']}s"
            f" (+{r['excess_over_lower_bound_seconds']}s; goal: within one"
            f" {r['window_seconds']:g}s window; the per-window coalescer of the minimum"
            f" {r['reference_coalescer_current_after_burst_seconds']}s) -> "
            + (
                "met"
                if r["staleness_goal_met"]
                else f"not met: {r['late_skus_after_bound_plus_window']} SKUs later"
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=20_000, help="records produced per second")
    parser.add_argument("--channels", default="shopify,amazon,webhook,webhook-batch")
    parser.add_argument(
        "--feed-seconds",
        type=float,
        default=1.0,
        help="emulated JSON_LISTINGS_FEED processing time",
    )
    parser.add_argument(
        "--webhook-settle",
        type=float,
        default=None,
        help="the webhook's settle_seconds (default: the connector's; 0: no settling)",
    )
    parser.add_argument(
        "--webhook-batch",
        type=int,
        default=100,
        help="records_per_post of the webhook-batch channel",
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
