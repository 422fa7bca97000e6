"""Reservation API under a hot-SKU flash sale: requests/s and latency, and where the latency goes.

    .venv/bin/python bench/reservations.py [--rate 500] [--seconds 15] [--units 3000]
                                           [--clients 64] [--max-seconds 10]

One fresh embedded broker, one stream worker (`python -m inventory_streams.cli worker --clock
wall`), the API as a process of its own (`python -m streams.api`), and this process as the
clients (aiohttp). One
SKU, HOT, at one location, listed on three channels; `--units` of it in stock, so the sale holds
the first units and rejects the rest (409), as a flash sale does. Every request reserves one unit
under a new reservation_id, the channels taking turns.

1. steady: an open loop at `--rate` requests/s for `--seconds` (a request is sent at its planned
   time whether or not earlier ones were answered); latency is from the planned send time to the
   answer, so a stall is charged to every request it delays;
2. max throughput: `--clients` closed-loop clients for `--max-seconds`;
3. the hops: each internal record's timestamp (CreateTime, set by the producing client, ms) for the
   steady run's reservations, read back from the topics after the run. A request for one SKU is
   decided where the SKU lives: API produce -> the SKU stage holds and publishes the decision ->
   API answers. (A request spanning partitions is coordinated: forwarded, TryHold, HoldResult,
   decision; those hops are printed when the trace has them.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from bench.core import cpu_seconds, machine, percentile, stop  # noqa: E402
from streams.codec import make_codec  # noqa: E402
from streams.commands import CommandCodec, is_envelope, unpack  # noqa: E402
from streams.core.catalog import load_catalog  # noqa: E402
from streams.core.models import ReservationRequested, StockAdjusted  # noqa: E402
from streams.core.sku import HoldResult, TryHold  # noqa: E402
from streams.runtime.broker import embedded_broker, free_port  # noqa: E402
from streams.runtime.catalog_store import publish  # noqa: E402
from streams.runtime.offsets import true_end_offsets  # noqa: E402
from streams.runtime.producer import SourceProducer  # noqa: E402
from streams.runtime.topics import (  # noqa: E402
    COMMANDS,
    EVENTS,
    RESERVATION_DECISIONS,
    ensure_topics,
    topic_specs,
)
from streams.settings import Settings  # noqa: E402

CHANNELS = ("web", "amazon", "pos")
TOKENS = {ch: f"bench-{ch}" for ch in CHANNELS}
P99_GOAL_MS = 25.0
CATALOG = load_catalog(
    {
        "locations": [{"id": "wh"}],
        "channels": [{"id": ch, "locations": ["wh"]} for ch in CHANNELS],
        "listings": [
            {"channel": ch, "channel_sku": "HOT", "components": [{"sku": "HOT", "quantity": 1}]}
            for ch in CHANNELS
        ],
    }
)


# Faust builds its consumer with fetch_max_wait_ms=1500; this launches the same worker CLI with
# that one argument replaced, to measure what the setting costs.
PATCHED_WORKER = """
import sys
import aiokafka
wait = int(sys.argv.pop(1))
_init = aiokafka.AIOKafkaConsumer.__init__
def _patched(self, *args, **kwargs):
    kwargs["fetch_max_wait_ms"] = wait
    _init(self, *args, **kwargs)
aiokafka.AIOKafkaConsumer.__init__ = _patched
from inventory_streams.cli import main
sys.argv[0] = "inventory-streams"
raise SystemExit(main(sys.argv[1:]))
"""


async def taken(session: aiohttp.ClientSession, port: int, api: str) -> dict[str, float]:
    """The worker's count of API requests by how its SKU stage took them (its /metrics)."""
    counts = {"now": 0.0, "fetched": 0.0}
    if api != "worker":
        return counts
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        for how in counts:
            if line.startswith(f'inventory_api_requests_taken_total{{how="{how}"}}'):
                counts[how] = float(line.rsplit(" ", 1)[1])
    return counts


class Clients:
    """The shop fronts: one aiohttp session, one request per reservation id."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session
        self.sent_at: dict[str, float] = {}  # wall clock, for the hop breakdown
        self.answered_at: dict[str, float] = {}
        self.status: dict[str, int] = {}

    async def reserve(self, rid: str, channel: str) -> int:
        body = {
            "reservation_id": rid,
            "channel": channel,
            "lines": [{"channel_sku": "HOT", "quantity": 1}],
        }
        self.sent_at[rid] = time.time()
        try:
            async with self.session.post(
                f"{self.base}/reservations",
                json=body,
                headers={"Authorization": f"Bearer {TOKENS[channel]}"},
            ) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientError:
            status = 0
        self.answered_at[rid] = time.time()
        self.status[rid] = status
        return status


async def steady(clients: Clients, rate: float, seconds: float, prefix: str) -> dict[str, Any]:
    """Open loop: request i is sent at start + i/rate; latency from that planned time."""
    n = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    late_sends = 0

    async def one(i: int, planned: float) -> None:
        status = await clients.reserve(f"{prefix}-{i}", CHANNELS[i % 3])
        latencies.append((time.perf_counter() - planned) * 1000)
        statuses[status] = statuses.get(status, 0) + 1

    tasks = []
    started = time.perf_counter()
    for i in range(n):
        planned = started + i / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late_sends += 1
        tasks.append(asyncio.create_task(one(i, planned)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    return {
        "requests": n,
        "elapsed": elapsed,
        "latencies": latencies,
        "statuses": statuses,
        "late_sends": late_sends,
    }


async def closed_loop(clients: Clients, concurrency: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def client(c: int) -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            sent = time.perf_counter()
            status = await clients.reserve(f"max-{i}", CHANNELS[i % 3])
            latencies.append((time.perf_counter() - sent) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return {
        "requests": len(latencies),
        "elapsed": time.perf_counter() - started,
        "latencies": latencies,
        "statuses": statuses,
    }


def report(name: str, run: dict[str, Any]) -> None:
    lat = run["latencies"]
    print(
        f"{name}: {run['requests']:,} requests in {run['elapsed']:.1f} s = "
        f"{run['requests'] / run['elapsed']:,.0f} requests/s; "
        f"latency p50 {percentile(lat, 50):.1f} ms, p90 {percentile(lat, 90):.1f} ms, "
        f"p99 {percentile(lat, 99):.1f} ms, "
        f"max {max(lat):.1f} ms; answers {dict(sorted(run['statuses'].items()))}",
        flush=True,
    )


# ---- the hops, from record timestamps ---------------------------------------------------------


def record_times(bootstrap: str, partitions: int, wanted: set[str]) -> dict[str, dict[str, float]]:
    """Per reservation id: when each stage produced its record for it (wall clock, seconds)."""
    codec = make_codec()
    commands = CommandCodec(codec)
    out: dict[str, dict[str, float]] = {}
    topics = (EVENTS, COMMANDS, RESERVATION_DECISIONS)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"hops-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "log_level": 0,
        }
    )
    try:
        parts = list(range(partitions))
        ends = {t: true_end_offsets(bootstrap, t, parts) for t in topics}
        consumer.assign([TopicPartition(t, p, 0) for t in topics for p in parts])
        position = {(t, p): 0 for t in topics for p in parts}
        idle = time.monotonic()
        while any(position[(t, p)] < ends[t][p] for t in topics for p in parts):
            messages = consumer.consume(1000, 0.2)
            if not messages:
                if time.monotonic() - idle > 10:
                    break
                continue
            idle = time.monotonic()
            for m in messages:
                if m.error():
                    continue
                topic, value = m.topic(), m.value()
                position[(topic, m.partition())] = m.offset() + 1
                at = m.timestamp()[1] / 1000
                seen: list[tuple[str, str]] = []  # (reservation id, stage)
                if topic == EVENTS:  # keyed by SKU: the id is in the event
                    event = codec.decode(value, EVENTS)
                    seen.append((getattr(event, "reservation_id", ""), "produced"))
                elif topic == RESERVATION_DECISIONS:
                    seen.append(((m.key() or b"").decode(), "decided"))
                else:
                    seen = command_stages(commands, value)
                for rid, stage in seen:
                    if rid in wanted:
                        out.setdefault(rid, {}).setdefault(stage, at)
    finally:
        consumer.close()
    return out


def command_stages(commands: CommandCodec, value: bytes) -> list[tuple[str, str]]:
    """(reservation id, stage) of each command a record of inventory.commands carries: one, or
    a batch's in an envelope."""
    values = [item.value for item in unpack(value)] if is_envelope(value) else [value]
    stages = []
    for one in values:
        cmd = commands.decode(one)
        stage = (
            "forwarded"
            if isinstance(cmd, ReservationRequested)
            else "try_hold"
            if isinstance(cmd, TryHold)
            else "hold_result"
            if isinstance(cmd, HoldResult)
            else None
        )
        if stage is not None:
            stages.append((getattr(cmd, "reservation_id", ""), stage))
    return stages


ONE_HOP = [
    (
        "client sends -> API has produced the request (HTTP, validation, acks=all)",
        "sent",
        "produced",
    ),
    (
        "-> the SKU's owner holds and publishes the decision (ack or fetch, batch)",
        "produced",
        "decided",
    ),
    ("-> API reads the decision and the client has the answer", "decided", "answered"),
]


def hops(clients: Clients, times: dict[str, dict[str, float]], in_process: bool) -> None:
    coordinated = [
        (
            "client sends -> API has produced the request (HTTP, validation, acks=all)",
            "sent",
            "produced",
        ),
        (
            "-> sku stage forwards it by reservation id (events fetch + batch)",
            "produced",
            "forwarded",
        ),
        ("-> reservation stage sends TryHold to the SKU", "forwarded", "try_hold"),
        ("-> SKU's owner answers HoldResult (the serialized decision)", "try_hold", "hold_result"),
        ("-> reservation stage publishes the decision", "hold_result", "decided"),
        ("-> API reads the decision and the client has the answer", "decided", "answered"),
    ]
    # a request for one SKU is decided where the SKU lives (one hop); others are coordinated
    steps = coordinated if any("try_hold" in t for t in times.values()) else ONE_HOP
    if in_process and steps is ONE_HOP:  # decided in the process: published after the answer
        steps = [
            steps[0],
            (
                "-> acknowledged, decided in the worker's process, the client has the answer",
                "produced",
                "answered",
            ),
            (
                "(the decision record, published with the stage's next batch, after the answer)",
                "answered",
                "decided",
            ),
        ]
    rows = []
    for rid, stages in times.items():
        if clients.status.get(rid) in (201, 409):  # a 503 was answered before any decision
            rows.append(
                {**stages, "sent": clients.sent_at[rid], "answered": clients.answered_at[rid]}
            )
    complete = [r for r in rows if all(k in r for _, a, b in steps for k in (a, b))]
    print(
        f"hops (record timestamps are ms-granular; {len(complete):,} reservations traced):",
        flush=True,
    )
    for label, a, b in steps:
        spans = [(r[b] - r[a]) * 1000 for r in complete]
        print(
            f"  {label:<78} p50 {percentile(spans, 50):6.1f} ms  "
            f"p99 {percentile(spans, 99):6.1f} ms  mean {statistics.fmean(spans or [0]):6.1f} ms"
        )


# ---- set-up ------------------------------------------------------------------------------------


def stock(bootstrap: str, settings: Settings, units: int) -> None:
    from datetime import UTC, datetime

    producer = SourceProducer(bootstrap, settings=settings)
    producer.send_event(
        StockAdjusted(
            event_id="bench-count",
            occurred_at=datetime.now(UTC),
            source="bench",
            sku="HOT",
            location="wh",
            mode="count",
            quantity=units,
        )
    )
    producer.close()


async def wait_healthy(
    base: str, processes: Iterable[subprocess.Popen[bytes]], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for p in processes:
                if p.poll() is not None:
                    raise RuntimeError(f"a process exited early: {p.args}")
            try:
                async with session.get(f"{base}/health") as r:
                    if r.status == 200 and (await r.json())["decisions"] == "live":
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the API did not become healthy")


async def drained(clients: Clients, timeout: float = 180) -> float:
    """Wait until a new request is answered within 0.5 s again: the backlog is worked off."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        sent = time.monotonic()
        await clients.reserve(f"probe-{uuid.uuid4().hex[:8]}", "web")
        if time.monotonic() - sent < 0.5:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def wait_ready(clients: Clients) -> None:
    """One reservation answered end to end: the worker owns its partitions and has the stock."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = await clients.reserve(f"ready-{uuid.uuid4().hex[:8]}", "web")
        if status == 201:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("no reservation was held within 90 s")


async def run(args: argparse.Namespace, workdir: Path) -> None:
    settings = Settings(data_dir=workdir)
    broker = embedded_broker(Settings(embedded_broker=args.broker))  # a fresh, empty one
    processes: list[subprocess.Popen[bytes]] = []
    try:
        broker.start()
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, topic_specs(settings, CHANNELS))
        publish(bootstrap, CATALOG)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CHANNEL_TOKENS": json.dumps(TOKENS),
        }
        port = free_port()
        command = ["worker", "--clock", "wall", "--data-dir", str(workdir / "worker")]
        metrics_port = free_port()
        if args.api == "worker":
            command += ["--api-port", str(port), "--metrics-port", str(metrics_port)]
        if args.worker_fetch_wait_ms is None:
            launch = [sys.executable, "-m", "inventory_streams.cli", *command]
        else:  # the worker with its Faust consumer's fetch wait changed (not how it ships)
            launch = [
                sys.executable,
                "-c",
                PATCHED_WORKER,
                str(args.worker_fetch_wait_ms),
                *command,
            ]
        worker = subprocess.Popen(
            launch,
            cwd=REPO,
            env=env,
            stdout=(workdir / "worker.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        processes.append(worker)
        stock(bootstrap, settings, args.units)
        api = worker
        if args.api == "process":
            api = subprocess.Popen(
                [sys.executable, "-m", "streams.api", "--port", str(port)],
                cwd=REPO,
                env=env,
                stdout=(workdir / "api.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
            processes.append(api)
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(base, processes)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            clients = Clients(base, session)
            await wait_ready(clients)
            serving = "API served by the worker" if args.api == "worker" else "API process"
            print(
                f"set-up: broker ({args.broker}), 1 worker, {serving}; "
                f"{args.units:,} units of HOT; "
                f"{settings.topic_partitions} partitions",
                flush=True,
            )
            await steady(clients, min(args.rate, 100), 3, "warm")  # JIT-free, but warm caches

            pids = {
                "worker" if args.api == "process" else "worker with the API": worker.pid,
                **({"api": api.pid} if args.api == "process" else {}),
                "broker": broker.pid,
                "clients": os.getpid(),
            }
            cpu_before = {k: cpu_seconds(p) for k, p in pids.items()}
            taken_before = await taken(session, metrics_port, args.api)
            run1 = await steady(clients, args.rate, args.seconds, "steady")
            cpu = {k: cpu_seconds(p) - cpu_before[k] for k, p in pids.items()}
            taken_after = await taken(session, metrics_port, args.api)
            report(f"steady {args.rate:g} requests/s offered", run1)
            if args.api == "worker":
                now, fetched = (taken_after[h] - taken_before[h] for h in ("now", "fetched"))
                print(
                    f"  taken by the SKU stage at the broker's acknowledgement: {now:,.0f}; "
                    f"by its next fetch (records before them not yet handled): {fetched:,.0f}",
                    flush=True,
                )
            if run1["late_sends"]:
                print(
                    f"  ({run1['late_sends']} sends left more than 5 ms late: the client "
                    "process itself was short of CPU)"
                )
            print(
                "  CPU during the steady run, % of one core: "
                + ", ".join(f"{k} {100 * v / run1['elapsed']:.0f}%" for k, v in cpu.items()),
                flush=True,
            )
            p99 = percentile(run1["latencies"], 99)
            print(
                f"  goal p99 <= {P99_GOAL_MS:g} ms at {args.rate:g} requests/s: "
                f"{'met' if p99 <= P99_GOAL_MS else 'NOT met'} (p99 {p99:.1f} ms)",
                flush=True,
            )

            backlog = await drained(clients)
            print(f"  backlog after the steady run worked off in {backlog:.0f} s", flush=True)
            run2 = await closed_loop(clients, args.clients, args.max_seconds)
            report(f"max throughput, {args.clients} closed-loop clients", run2)

        wanted = {f"steady-{i}" for i in range(0, int(args.rate * args.seconds))}
        times = await asyncio.to_thread(record_times, bootstrap, settings.topic_partitions, wanted)
        hops(clients, times, in_process=args.api == "worker")
    finally:
        for p in processes:
            stop(p)
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--broker", choices=("tansu", "kafka"), default="tansu", help="the embedded broker"
    )
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--units", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=10)
    parser.add_argument(
        "--api",
        choices=["worker", "process"],
        default="worker",
        help="serve the API from the worker (`worker --api-port`: the owner hands decisions over "
        "in the process) or as a process of its own (`python -m streams.api`: every decision is "
        "read back from inventory.reservation-decisions)",
    )
    parser.add_argument(
        "--worker-fetch-wait-ms",
        type=int,
        default=None,
        help="run the worker with its Faust consumer's fetch_max_wait_ms set to this (Faust "
        "hard-codes 1500 ms, and Tansu answers a fetch that found nothing only after that wait)",
    )
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {machine()}; load average before the run {load}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-reservations-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
