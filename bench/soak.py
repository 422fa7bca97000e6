"""Soak: memory and latency of two workers under a steady realistic load for minutes on end.

    .venv/bin/python bench/soak.py [--minutes 10] [--warmup 2] [--rate 1000] [--reservations 200]
                                   [--skus 2000] [--locations 5] [--broker kafka|tansu]

Goal (issue #21): 10 minutes at 1,000 events/s and 200 reservations/s; after the warm-up, worker
and broker memory grow by at most 10 %, and the p99 of each latency in the last minute is within
20 % of the first minute after the warm-up.

One fresh embedded broker (Apache Kafka by default: Tansu's memory storage slows down with every
batch a partition holds, so a soak on it measures the broker), the catalog of bench/core.py
(`--skus` x `--locations`, channels web and amz), two stream workers in one group
(`inventory-streams worker --clock wall`), each serving the reservation API as `up` runs them,
and two load processes:

- the events: a subprocess of this file producing bench/core.py's realistic mix at `--rate`/s
  (an open loop: event i goes at start + i/rate), generated a minute at a time with ids of their
  own, each stamped with the wall time it is sent (a cycle count keeps its 5 minutes of lateness),
  its holds lasting `--mix-ttl` s so that they reach a steady state within the warm-up. It reads
  availability.web too: event-to-availability latency is the time from the produce call of an
  event to the arrival of the first availability.web record naming it as `cause_event_id`, both
  clocks in that process (the producer lingers 20 ms, as every source of ours does; the wait is
  inside). Events that change no availability, or whose effect a later event in the same stage
  batch names instead, have no record and are not counted; the matched count says how many are.
- the reservations: this process, an open loop at `--reservations`/s, the two APIs and the two
  channels taking turns, one unit of a SKU drawn at random under a new reservation id with a TTL
  of `--ttl` s, so holds expire and give the stock back; latency from the planned send time to
  the answer, as bench/reservations.py measures it.

Every `--sample` s: the resident memory (VmRSS) of each worker, the broker (Kafka and its
ZooKeeper apart) and both load processes, their CPU time, and the workers' consumer lag from
their /metrics. Per minute: those, and p50/p99 of both latencies. Then the verdicts: memory of
each process at the last sample against the first one after the warm-up, and the p99 of the last
minute against the first minute after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from confluent_kafka import OFFSET_END, Consumer, TopicPartition  # noqa: E402

from bench.core import (  # noqa: E402
    cpu_seconds,
    generate,
    machine,
    make_catalog,
    percentile,
    rss_kib,
    stop,
    tail,
)
from streams.codec import make_codec  # noqa: E402
from streams.core.models import (  # noqa: E402
    Event,
    InboundScheduled,
    OrderCancelled,
    OrderCreated,
    PickConfirmed,
    ReservationReleased,
    ReservationRequested,
    StockAdjusted,
)
from streams.runtime.broker import EmbeddedKafka, embedded_broker, free_port  # noqa: E402
from streams.runtime.catalog_store import publish  # noqa: E402
from streams.runtime.producer import SourceProducer  # noqa: E402
from streams.runtime.topics import (  # noqa: E402
    TABLES,
    availability_topic,
    changelog_topic,
    ensure_topics,
    topic_specs,
)
from streams.settings import Settings  # noqa: E402

CHANNELS = ("web", "amz")  # bench/core.py's catalog
TOKENS = {ch: f"soak-{ch}" for ch in CHANNELS}
MEMORY_GOAL = 0.10  # growth after the warm-up
P99_GOAL = 0.20  # last minute's p99 against the first minute's after the warm-up
LATENCY_CHANNEL = "web"  # every location: every change of ATS shows on it
GRACE_SECONDS = 15.0  # the event load keeps reading availability this long after its last send
UNMATCHED_AFTER = 60.0  # an event with no availability record this long after its send has none


# ---- the event load (a subprocess of this file: its GIL is not the clients') -------------------


def mix(chunk: int, size: int, skus: int, locations: int, mix_ttl: int) -> list[Event]:
    """Chunk `chunk` of the realistic mix: bench/core.py's generator with a seed per chunk, the
    opening counts left out, ids prefixed so that no chunk repeats another's."""
    opening = skus * locations
    events = generate(size + opening, skus, locations, seed=7 + chunk)[opening:]
    prefix = f"s{chunk}-"
    out: list[Event] = []
    for event in events:
        update: dict[str, Any] = {"event_id": prefix + event.event_id}
        if isinstance(event, OrderCreated | PickConfirmed | OrderCancelled) and event.order_id:
            update["order_id"] = prefix + event.order_id
        if isinstance(event, ReservationRequested | ReservationReleased):
            update["reservation_id"] = prefix + (event.reservation_id or "")
        if isinstance(event, ReservationRequested):
            update["ttl_seconds"] = mix_ttl
        if isinstance(event, InboundScheduled) or (
            isinstance(event, StockAdjusted) and event.po_id
        ):
            update["po_id"] = prefix + (event.po_id or "")
        out.append(event.model_copy(update=update))
    return out


def restamp(event: Event, now: datetime, lateness: timedelta) -> Event:
    """The event as if it happened `lateness` before `now` (a PO's eta moved along with it)."""
    update: dict[str, Any] = {"occurred_at": now - lateness}
    if isinstance(event, InboundScheduled):
        update["eta"] = now.date() + (event.eta - event.occurred_at.date())
    return event.model_copy(update=update)


def chunks(args: argparse.Namespace) -> Iterator[list[Event]]:
    """Minute-sized chunks, generated one ahead in a thread so the pacing never waits on them."""
    size = int(args.rate * 60)
    ready: deque[list[Event]] = deque()
    wanted = threading.Semaphore(2)

    def make() -> None:
        for k in range(10**6):
            wanted.acquire()
            ready.append(mix(k, size, args.skus, args.locations, args.mix_ttl))

    threading.Thread(target=make, daemon=True).start()
    while True:
        while not ready:
            time.sleep(0.01)
        wanted.release()
        yield ready.popleft()


class Watcher(threading.Thread):
    """Reads availability.web from its end: per event sent, the latency to its first record."""

    def __init__(self, bootstrap: str, partitions: int, start: float) -> None:
        super().__init__(daemon=True)
        self.codec = make_codec(Settings())
        self.topic = availability_topic(LATENCY_CHANNEL)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "soak-latency",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "log_level": 0,
            }
        )
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in range(partitions)])
        self.start_at = start  # perf_counter of the run's start
        self.sent: dict[str, float] = {}  # event id -> perf_counter of its produce call
        self.order: deque[tuple[float, str]] = deque()  # the same, oldest first, for expiry
        self.latencies: list[tuple[float, float]] = []  # (sent, s after start; ms)
        self.unmatched = 0
        self.halt = threading.Event()

    def note(self, event_id: str, at: float) -> None:
        self.sent[event_id] = at
        self.order.append((at, event_id))

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                first = self.consumer.poll(0.05)
                messages = [first, *self.consumer.consume(10_000, 0)] if first else []
                received = time.perf_counter()
                for message in messages:
                    value = message.value()
                    if message.error() or value is None:
                        continue
                    record = self.codec.decode(value, self.topic)
                    sent = self.sent.pop(record.cause_event_id, None)  # type: ignore[attr-defined]
                    if sent is not None:
                        self.latencies.append((sent - self.start_at, (received - sent) * 1000))
                while self.order and self.order[0][0] < received - UNMATCHED_AFTER:
                    if self.sent.pop(self.order.popleft()[1], None) is not None:
                        self.unmatched += 1
        finally:
            self.consumer.close()


def load_main(args: argparse.Namespace) -> None:
    """Produce the mix at `--rate`/s from `--start` (unix time) for `--seconds`; write what the
    watcher saw to `--out` as JSON."""
    settings = Settings()
    producer = SourceProducer(args.bootstrap, settings=settings, linger_ms=20)
    producer.start_polling()
    source = itertools.chain.from_iterable(chunks(args))
    start = time.perf_counter() + (args.start - time.time())
    watcher = Watcher(args.bootstrap, settings.topic_partitions, start)
    watcher.start()
    total = int(args.rate * args.seconds)
    late = 0
    current, newest = "", datetime.min.replace(tzinfo=UTC)  # the mix's clock (per chunk)
    cpu0 = time.process_time()
    time.sleep(max(0.0, start - time.perf_counter()))
    for i, event in enumerate(itertools.islice(source, total)):
        delay = start + i / args.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.005:
            late += 1
        chunk = event.event_id.split("-", 1)[0]
        if chunk != current:  # a chunk's clock starts again
            current, newest = chunk, event.occurred_at
        newest = max(newest, event.occurred_at)
        out = producer.encode_event(restamp(event, datetime.now(UTC), newest - event.occurred_at))
        watcher.note(event.event_id, time.perf_counter())
        producer.send(out)
    elapsed = time.perf_counter() - start
    counts = producer.close()
    time.sleep(GRACE_SECONDS)
    watcher.halt.set()
    watcher.join(5)
    result = {
        "sent": total,
        "acked": counts.events_acked,
        "late_sends": late,
        "rate": total / elapsed,
        "cpu_seconds": time.process_time() - cpu0,
        "unmatched": watcher.unmatched + len(watcher.sent),
        "latencies": [(round(t, 3), round(ms, 2)) for t, ms in watcher.latencies],
    }
    Path(args.out).write_text(json.dumps(result))


# ---- this process: set-up, the reservation clients, the samples, the report --------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, MB (MiB, as before); NaN once it is gone."""
    kib = rss_kib(pid)
    return math.nan if kib is None else kib / 1024


@dataclass
class Sample:
    at: float  # s after the start
    rss: dict[str, float]
    cpu: dict[str, float]
    lag: float  # records, summed over both workers' partitions


@dataclass
class Reservations:
    """The shop fronts: an open loop, latency from each request's planned time."""

    bases: list[str]
    skus: int
    ttl: int
    session: aiohttp.ClientSession
    done: list[tuple[float, float, int]] = field(default_factory=list)  # (planned s, ms, status)
    late_sends: int = 0

    async def reserve(self, rid: str, base: str, channel: str, sku: str) -> int:
        body = {
            "reservation_id": rid,
            "channel": channel,
            "ttl_seconds": self.ttl,
            "lines": [{"channel_sku": sku, "quantity": 1}],
        }
        try:
            async with self.session.post(
                f"{base}/reservations",
                json=body,
                headers={"Authorization": f"Bearer {TOKENS[channel]}"},
            ) as response:
                await response.read()
                return response.status
        except aiohttp.ClientError:
            return 0

    async def run(self, rate: float, start: float, seconds: float) -> None:
        rnd = random.Random(11)
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int, planned: float) -> None:
            sku = f"SKU-{rnd.randrange(self.skus):05d}"
            status = await self.reserve(
                f"soak-{i}", self.bases[i % len(self.bases)], CHANNELS[(i // 2) % 2], sku
            )
            self.done.append((planned - start, (time.perf_counter() - planned) * 1000, status))

        for i in range(int(rate * seconds)):
            planned = start + i / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                self.late_sends += 1
            task = asyncio.create_task(one(i, planned))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=30)


async def lag(session: aiohttp.ClientSession, ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        except aiohttp.ClientError:
            return math.nan
        for line in text.splitlines():
            if line.startswith("inventory_consumer_lag_records{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def sample_every(
    every: float,
    start: float,
    until: float,
    pids: dict[str, int],
    session: aiohttp.ClientSession,
    metrics_ports: list[int],
    out: list[Sample],
) -> None:
    while True:
        now = time.perf_counter()
        out.append(
            Sample(
                at=now - start,
                rss={k: rss_mb(p) for k, p in pids.items()},
                cpu={k: cpu_seconds(p, missing=math.nan) for k, p in pids.items()},
                lag=await lag(session, metrics_ports),
            )
        )
        if now >= until:
            return
        await asyncio.sleep(max(0.0, min(until, start + len(out) * every) - time.perf_counter()))


async def wait_ready(session: aiohttp.ClientSession, bases: list[str], skus: int) -> None:
    """Both APIs healthy, and a reservation held through each: the group has settled."""
    deadline = time.monotonic() + 180
    clients = Reservations(bases, skus, 5, session)
    for base in bases:
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base} held no reservation within 180 s")
            status = await clients.reserve(f"ready-{time.time_ns()}", base, "web", "SKU-00001")
            if status == 201:
                break
            await asyncio.sleep(0.5)


def opening_counts(bootstrap: str, skus: int, locations: int) -> int:
    """Every SKU's opening count at every location, dated before the mix's late counts."""
    at = datetime.now(UTC) - timedelta(minutes=10)
    producer = SourceProducer(bootstrap, settings=Settings())
    opening = generate(skus * locations, skus, locations)
    for event in opening:
        producer.send_event(event.model_copy(update={"occurred_at": at}))
    counts = producer.close()
    return counts.events_acked


def table_sizes(bootstrap: str, app_id: str, partitions: int) -> list[str]:
    """What the workers' tables hold at the end: per table, the keys and the bytes of each key's
    latest changelog record, the largest record, and what its largest fields are."""
    lines = []
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "soak-tables", "enable.auto.commit": False}
    )
    try:
        for table in TABLES:
            topic = changelog_topic(app_id, table)
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                    for p in range(partitions)}  # fmt: skip
            consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
            latest: dict[bytes, bytes] = {}
            done = {p for p, end in ends.items() if end <= 0}
            while len(done) < partitions:
                message = consumer.poll(1.0)
                if message is None or message.error():
                    continue
                key, value, partition = message.key(), message.value(), message.partition()
                if key is not None:
                    if value:
                        latest[key] = value
                    else:
                        latest.pop(key, None)
                if partition is not None and (message.offset() or 0) + 1 >= ends[partition]:
                    done.add(partition)
            consumer.unassign()
            total = sum(map(len, latest.values()))
            line = f"  {table}: {len(latest):,} keys, {total / 1e6:,.1f} MB of latest records"
            if latest:
                key, value = max(latest.items(), key=lambda kv: len(kv[1]))
                line += f"; largest {key.decode(errors='replace')} {len(value) / 1e3:,.1f} kB"
                with contextlib.suppress(ValueError):
                    record = orjson.loads(value[value.index(b"{") :])
                    fields = sorted(
                        ((k, len(orjson.dumps(v))) for k, v in record.items()),
                        key=lambda kv: -kv[1],
                    )[:4]
                    line += " (" + ", ".join(f"{k!r}: {n / 1e3:,.1f} kB" for k, n in fields) + ")"
            lines.append(line)
    finally:
        consumer.close()
    return lines


def minute_rows(
    samples: list[Sample],
    reservations: list[tuple[float, float, int]],
    events: list[tuple[float, float]],
    seconds: float,
    names: list[str],
) -> list[str]:
    rows = []
    header = (
        "| minute | "
        + " | ".join(f"{n} MB" for n in names)
        + " | lag | reservations 201 / 409 / other | reservation p50 / p99 ms "
        "| events matched | event→availability p50 / p99 ms |"
    )
    rows.append(header)
    rows.append("|" + "---|" * (header.count("|") - 1))
    for m in range(math.ceil(seconds / 60)):
        lo, hi = m * 60, min(seconds, (m + 1) * 60)
        inside = [s for s in samples if lo < s.at <= hi + 1] or samples[-1:]
        last = inside[-1]
        res = [r for r in reservations if lo <= r[0] < hi]
        codes = [r[2] for r in res]
        ok = [r[1] for r in res]
        ev = [e[1] for e in events if lo <= e[0] < hi]
        rows.append(
            f"| {m + 1} | "
            + " | ".join(f"{last.rss[n]:,.0f}" for n in names)
            + f" | {last.lag:,.0f} | {codes.count(201):,} / {codes.count(409):,} / "
            f"{len(codes) - codes.count(201) - codes.count(409):,} | "
            f"{percentile(ok, 50):.1f} / {percentile(ok, 99):.1f} | {len(ev):,} | "
            f"{percentile(ev, 50):.1f} / {percentile(ev, 99):.1f} |"
        )
    return rows


async def run(args: argparse.Namespace, workdir: Path) -> None:
    seconds = args.minutes * 60
    settings = Settings(data_dir=workdir)
    catalog = make_catalog(args.skus, args.locations)
    broker = embedded_broker(Settings(embedded_broker=args.broker))  # a fresh, empty one
    processes: list[subprocess.Popen[bytes]] = []
    try:
        broker.start()
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, topic_specs(settings, [c.id for c in catalog.channels]))
        publish(bootstrap, catalog)
        opened = opening_counts(bootstrap, args.skus, args.locations)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CHANNEL_TOKENS": json.dumps(TOKENS),
        }
        ports = []
        for i in range(2):
            api, metrics = free_port(), free_port()
            command = [
                sys.executable, "-m", "inventory_streams.cli", "worker", "--clock", "wall",
                "--api-port", str(api), "--api-host", "127.0.0.1",
                "--metrics-port", str(metrics), "--data-dir", str(workdir / f"worker-{i}"),
            ]  # fmt: skip
            log = (workdir / f"worker-{i}.log").open("ab")
            processes.append(
                subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
            ports.append((api, metrics))
        bases = [f"http://127.0.0.1:{api}" for api, _ in ports]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await wait_ready(session, bases, args.skus)
            pids = {"worker-0": processes[0].pid, "worker-1": processes[1].pid}
            if isinstance(broker, EmbeddedKafka):
                pids["kafka"] = broker.pids[-1]
                pids["zookeeper"] = broker.pids[0]
            elif broker.pid is not None:
                pids["tansu"] = broker.pid
            start_unix = time.time() + 8  # the event load imports, and generates its first chunk
            out = workdir / "events.json"
            load = subprocess.Popen(
                [
                    sys.executable, __file__, "--load", "--bootstrap", bootstrap,
                    "--start", f"{start_unix:.3f}", "--seconds", str(seconds),
                    "--rate", str(args.rate), "--skus", str(args.skus),
                    "--locations", str(args.locations), "--mix-ttl", str(args.mix_ttl),
                    "--out", str(out),
                ],
                cwd=REPO,
                env=env,
                stdout=(workdir / "load.log").open("ab"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            processes.append(load)
            pids["event load"] = load.pid
            pids["clients"] = os.getpid()
            names = list(pids)
            print(
                f"set-up: broker ({args.broker}, started in {broker.startup_seconds:.1f} s), "
                f"2 workers each serving the API, {args.skus:,} SKUs x {args.locations} "
                f"locations ({opened:,} opening counts), {settings.topic_partitions} partitions; "
                f"{args.rate:g} events/s and {args.reservations:g} reservations/s for "
                f"{args.minutes:g} min, warm-up {args.warmup:g} min",
                flush=True,
            )
            start = time.perf_counter() + (start_unix - time.time())
            samples: list[Sample] = []
            metrics_ports = [m for _, m in ports]
            sampler = asyncio.create_task(
                sample_every(
                    args.sample, start, start + seconds, pids, session, metrics_ports, samples
                )
            )
            clients = Reservations(bases, args.skus, args.ttl, session)
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            progress = asyncio.create_task(report_progress(start, seconds, samples, clients))
            await clients.run(args.reservations, start, seconds)
            await sampler
            progress.cancel()
        load_avg_end = os.getloadavg()
        await asyncio.to_thread(load.wait, GRACE_SECONDS + 60)
        if not out.exists():
            raise RuntimeError(f"the event load wrote nothing:\n{tail(workdir / 'load.log')}")
        for i, p in enumerate(processes[:2]):
            if p.poll() is not None:
                raise RuntimeError(f"worker {i} exited:\n{tail(workdir / f'worker-{i}.log')}")
        tables = await asyncio.to_thread(
            table_sizes, bootstrap, settings.app_id, settings.topic_partitions
        )
    finally:
        for p in processes:
            stop(p)
        broker.stop()

    events = json.loads(out.read_text())
    latencies = [(float(t), float(ms)) for t, ms in events["latencies"]]
    report(args, samples, clients, events, latencies, names, load_avg_end)
    print("the tables at the end (their changelogs, latest record per key):")
    print("\n".join(tables))


async def report_progress(
    start: float, seconds: float, samples: list[Sample], clients: Reservations
) -> None:
    """One line a minute while it runs, so a long soak shows it is alive."""
    m = 1
    while m * 60 <= seconds:
        await asyncio.sleep(max(0.0, start + m * 60 + 1 - time.perf_counter()))
        last = samples[-1]
        res = [r for r in clients.done if (m - 1) * 60 <= r[0] < m * 60]
        print(
            f"  minute {m}: "
            + ", ".join(f"{k} {v:,.0f} MB" for k, v in last.rss.items())
            + f"; lag {last.lag:,.0f}; reservations {len(res):,}, p99 "
            f"{percentile([r[1] for r in res], 99):.1f} ms",
            flush=True,
        )
        m += 1


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    clients: Reservations,
    events: dict[str, Any],
    latencies: list[tuple[float, float]],
    names: list[str],
    load_avg_end: tuple[float, float, float],
) -> None:
    seconds, warmup = args.minutes * 60, args.warmup * 60
    res = clients.done
    codes = [r[2] for r in res]
    print()
    print(
        f"events: {events['sent']:,} sent at {events['rate']:,.0f}/s ({events['acked']:,} "
        f"acknowledged, {events['late_sends']:,} sends >5 ms late), {len(latencies):,} matched "
        f"to an availability.{LATENCY_CHANNEL} record, {events['unmatched']:,} with none within "
        f"{UNMATCHED_AFTER:g} s"
    )
    print(
        f"reservations: {len(res):,} answered ({clients.late_sends:,} sends >5 ms late): "
        f"201 {codes.count(201):,} ({codes.count(201) / max(1, len(codes)):.1%}), "
        f"409 {codes.count(409):,}, other "
        + str({c: codes.count(c) for c in sorted(set(codes)) if c not in (201, 409)})
    )
    span = samples[-1].at - samples[0].at
    print(
        "CPU over the run, % of one core: "
        + ", ".join(
            f"{n} {100 * (samples[-1].cpu[n] - samples[0].cpu[n]) / span:.0f}%" for n in names
        )
        + f"; load average at the end {' '.join(f'{x:.2f}' for x in load_avg_end)}"
    )
    print()
    for row in minute_rows(samples, res, latencies, seconds, names):
        print(row)
    print()
    print(f"memory samples every {args.sample:g} s (MB):")
    for n in names:
        print(f"  {n:<10} " + " ".join(f"{s.rss[n]:.0f}" for s in samples))
    print()

    after = [s for s in samples if s.at >= warmup] or samples[-1:]
    print(
        f"verdicts (goal: memory +{MEMORY_GOAL:.0%} at most after the warm-up, p99 within "
        f"{P99_GOAL:.0%}):"
    )
    for n in names[:-2] if len(names) > 2 else names:  # the load processes are not under test
        first, last = after[0].rss[n], samples[-1].rss[n]
        growth = (last - first) / first
        print(
            f"  memory {n}: {first:,.0f} MB at {after[0].at:.0f} s -> {last:,.0f} MB at "
            f"{samples[-1].at:.0f} s: {growth:+.1%} {'met' if growth <= MEMORY_GOAL else 'NOT met'}"
        )
    # a backlog that grows makes every latency the backlog's (capped by the matching window and
    # the API's answer timeout) and adds to memory: then no latency verdict is the code's
    last_minute = [r[2] for r in res if r[0] >= seconds - 60]
    refused = sum(1 for c in last_minute if c not in (201, 409)) / max(1, len(last_minute))
    kept_up = samples[-1].lag <= args.rate * 5 and refused < 0.01
    if not kept_up:
        print(
            f"  NOT A STEADY STATE: the workers fell behind (lag {after[0].lag:,.0f} records at "
            f"{after[0].at:.0f} s, {samples[-1].lag:,.0f} at the end; {refused:.0%} of the last "
            "minute's reservations not decided): no latency verdict; memory holds the backlog too"
        )
    first_lo, last_lo = warmup, max(warmup, seconds - 60)
    for label, values in (
        ("reservation", [(r[0], r[1]) for r in res]),
        (f"event->availability.{LATENCY_CHANNEL}", latencies),
    ):
        head = percentile([v for t, v in values if first_lo <= t < first_lo + 60], 99)
        end = percentile([v for t, v in values if last_lo <= t < seconds], 99)
        change = (end - head) / head
        print(
            f"  p99 {label}: first minute after the warm-up ({first_lo:.0f}-{first_lo + 60:.0f} s) "
            f"{head:.1f} ms, last minute ({last_lo:.0f}-{seconds:.0f} s) {end:.1f} ms: "
            f"{change:+.1%} "
            + ("no verdict" if not kept_up else "met" if abs(change) <= P99_GOAL else "NOT met")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes left out of verdicts")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s of the realistic mix")
    parser.add_argument("--reservations", type=float, default=200.0, help="API requests/s")
    parser.add_argument("--skus", type=int, default=2000)
    parser.add_argument("--locations", type=int, default=5)
    parser.add_argument("--ttl", type=int, default=30, help="the API reservations' ttl_seconds")
    parser.add_argument("--mix-ttl", type=int, default=60, help="the mix's holds' ttl_seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--broker", choices=("kafka", "tansu"), default="kafka", help="the embedded broker"
    )
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_main(args)
        return
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
