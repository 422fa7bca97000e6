"""Throughput and latency of the live topology on the embedded broker, against two ceilings.

    .venv/bin/python bench/topology.py [--events 50000] [--skus 2000] [--locations 5]
                                       [--rate 1000] [--seconds 15] [--max-seconds 60]
                                       [--linger-ms 20]

One run, one fresh embedded broker, the stages one after the other (never two at once, so they
do not share the CPU; the ceilings run first, before any worker exists):

1. full topology: N generated events pre-published to inventory.events, then one worker
   (`python -m inventory_streams.cli worker --clock stream`); events/s from the first record on
   inventory.positions (worker start-up excluded) to the last record the topology wrote, once
   group `inventory-streams` has committed every input and internal command topic up to its end
   and nothing was written for 1 s. Arrival times come from a consumer in this process that reads
   every input and output topic. A topology still busy `--max-seconds` after its first output is
   rated, as a lower bound, by the events committed on inventory.events less the records still
   pending on the internal topics; its backlog is then skipped (offsets moved to the end) so
   stage 4 starts caught up.
2. the framework ceiling: a minimal faust.App in a subprocess whose one agent only counts the same
   N records: `stream.take(1000, within=0.005)`, then plain `async for`; first to N-th record.
3. the Python ceiling without Faust: one confluent-kafka consumer that decodes every record with
   streams.codec and runs the domain core (Engine.process_batch per 1,000 records).
4. latency at a steady rate: with the worker caught up, +1 stock deltas at loc-0 over every SKU in
   turn (each SKU has an identity listing on `web`, and a +1000 warm-up makes every +1 change its
   availability), each with its own event_id; time from the produce call to the arrival of the
   availability.web record whose cause_event_id names it, both clocks in this process. An event
   whose record never arrives counts as infinitely late. The producer lingers --linger-ms
   (20 ms, as `inventory-streams publish` and every source of ours do) before sending; the wait
   is inside the latency, which starts at the produce call. The CPU of the worker, the broker and
   this process while publishing is printed too: on a two-core machine the three compete, and the
   broker's share is large.

Two things about the embedded Tansu broker shape how this measures: ListOffsets answers the last
batch's base offset + 1 (so ends are read, not asked for), and an empty fetch is answered only
after its fetch.wait.max.ms (so the latency consumer asks with 10 ms).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import (  # noqa: E402
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # noqa: E402

from bench.core import (  # noqa: E402
    Outputs,
    cpu_seconds,
    generate,
    machine,
    make_catalog,
    stop,
    tail,
)
from streams.codec import make_codec  # noqa: E402
from streams.core.check import check_event  # noqa: E402
from streams.core.models import StockAdjusted  # noqa: E402
from streams.runners.local import Engine  # noqa: E402
from streams.runtime.broker import embedded_broker  # noqa: E402
from streams.runtime.catalog_store import publish  # noqa: E402
from streams.runtime.producer import SourceProducer  # noqa: E402
from streams.runtime.topics import (  # noqa: E402
    ALERTS,
    COMMANDS,
    DLQ,
    EVENTS,
    POSITIONS,
    availability_topic,
    ensure_topics,
    topic_specs,
)
from streams.settings import Settings  # noqa: E402

INPUTS = (EVENTS, COMMANDS)
SAMPLE_EVERY = 0.1  # seconds between offset samples while a stage runs
STABLE_FOR = 1.0  # seconds without a new output record before a drained topology counts as done
FULL_GOAL = 0.80
P99_GOAL_MS = 100.0
LATENCY_CHANNEL = "web"
LATENCY_LOCATION = "loc-0"


# ---- offsets, seen from outside the worker --------------------------------------------------


def arrivals(consumer: Consumer, timeout: float) -> list[Message]:
    """What has arrived: waits for the first record only (consume(n, t) waits for n or t)."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(10_000, timeout=0)]


class Tail(threading.Thread):
    """Reads every record of `topics` as it is written: the true end offset of each partition,
    and when each topic first and last grew (perf_counter, this process).

    End offsets come from reading, not from ListOffsets: the embedded Tansu answers ListOffsets
    (and so get_watermark_offsets) with the last batch's base offset + 1, not the log end.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str], partitions: int) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-tail",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,  # Tansu answers an empty fetch only after this long
                "log_level": 0,
            }
        )
        self.consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
        self.ends: dict[tuple[str, int], int] = {}
        self.first_at: dict[str, float] = {}
        self.last_at: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                messages = arrivals(self.consumer, 0.1)
                received = time.perf_counter()
                for message in messages:
                    topic, partition, offset = (
                        message.topic(),
                        message.partition(),
                        message.offset(),
                    )
                    if message.error() or topic is None or partition is None or offset is None:
                        continue
                    self.ends[(topic, partition)] = offset + 1
                    self.first_at.setdefault(topic, received)
                    self.last_at[topic] = received
        finally:
            self.consumer.close()

    def total(self, topic: str) -> int:
        return sum(end for (t, _), end in list(self.ends.items()) if t == topic)

    def last(self, topics: Iterable[str]) -> float:
        return max((self.last_at.get(t, 0.0) for t in topics), default=0.0)


def committed(
    admin: AdminClient, group: str, topics: Iterable[str], partitions: int
) -> dict[tuple[str, int], int]:
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    try:
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
        listed = result[group].result(10)
    except KafkaException:
        return {}  # the group has not committed anything yet
    return {(tp.topic, tp.partition): tp.offset for tp in listed.topic_partitions}


@dataclass
class Drain:
    """What wait_drained saw: every time is perf_counter of this process."""

    drained: bool
    committed_at: float | None = None  # first check with every input committed to its end
    complete: list[tuple[float, int]] = field(default_factory=list)  # (t, events done, at least)
    cpu: list[tuple[float, float, float]] = field(default_factory=list)  # (t, worker, broker)

    def cpu_between(self, start: float, end: float) -> tuple[float, float, float]:
        """(wall seconds, worker CPU seconds, broker CPU seconds) between the samples nearest
        after `start` and at or after `end`."""
        after = [c for c in self.cpu if c[0] >= start] or self.cpu[-1:]
        upto = [c for c in after if c[0] >= end] or after[-1:]
        (t0, w0, b0), (t1, w1, b1) = after[0], upto[0]
        return t1 - t0, w1 - w0, b1 - b0


def wait_drained(
    tail_: Tail,
    admin: AdminClient,
    group: str,
    partitions: int,
    outputs: list[str],
    worker: subprocess.Popen[bytes],
    broker_pid: int | None,
    log: Path,
    timeout: float,
    since: float,
    max_seconds: float | None = None,
) -> Drain:
    """Wait until `group` has committed every input partition up to the end read by `tail_` and
    no output grew for STABLE_FOR seconds, or until `max_seconds` after the first output."""
    deadline = time.perf_counter() + timeout
    seen = Drain(drained=False)
    cap: float | None = None
    while True:
        time.sleep(0.25)
        now = time.perf_counter()
        seen.cpu.append((now, cpu_seconds(worker.pid), cpu_seconds(broker_pid)))
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}:\n{tail(log)}")
        if now > deadline:
            raise RuntimeError(f"topology did not drain within {timeout:g} s:\n{tail(log)}")
        if tail_.last(outputs) < since:
            continue  # nothing written yet
        if cap is None and max_seconds is not None:
            cap = now + max_seconds
        done = committed(admin, group, INPUTS, partitions)
        ends = {k: v for k, v in list(tail_.ends.items()) if k[0] in INPUTS}
        # complete, at least: committed on EVENTS, less every internal record still pending
        # (each stands for at most one event whose work is not finished)
        on_events = sum(v for (t, _), v in done.items() if t == EVENTS and v > 0)
        pending = sum(max(0, e - max(0, done.get(k, 0))) for k, e in ends.items() if k[0] != EVENTS)
        seen.complete.append((now, on_events - pending))
        if all(done.get(key, -1) >= end for key, end in ends.items()):
            seen.committed_at = seen.committed_at or now
            if now - tail_.last(outputs) >= STABLE_FOR:
                seen.drained = True
                return seen
        else:
            seen.committed_at = None
        if cap is not None and now >= cap:
            return seen


def skip_backlog(
    tail_: Tail, admin: AdminClient, group: str, partitions: int, timeout: float = 20.0
) -> None:
    """Commit every input partition at its end for a stopped group: a restarted worker starts
    there, with its tables recovered from the changelogs."""
    time.sleep(1.0)  # the tail reads what the worker wrote before it stopped
    ends = dict(tail_.ends)
    tps = [TopicPartition(t, p, ends.get((t, p), 0)) for t in INPUTS for p in range(partitions)]
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
            result[group].result(10)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # the stopped worker may still count as a member for a moment


def start_worker(bootstrap: str, workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "inventory_streams.cli", "worker", "--clock", "stream",
         "--data-dir", str(workdir / "worker")],
        cwd=REPO,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


# ---- 2. the empty agent (runs as a subprocess of this file) ---------------------------------


def empty_agent_main(mode: str, bootstrap: str, count: int, partitions: int) -> None:
    """A Faust app whose agent only counts records; one JSON line once it has seen `count`."""
    import faust

    app = faust.App(
        f"bench-empty-{mode}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix=f"bench-empty-{mode}-"),
        topic_partitions=partitions,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        web_enabled=False,
    )
    topic = app.topic(
        EVENTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    seen = [0]
    started = [0.0]
    before = [0]  # records that arrived with the first one: not inside the timed span

    def report() -> None:
        elapsed = time.perf_counter() - started[0]
        print(json.dumps({"timed": seen[0] - before[0], "seconds": elapsed}), flush=True)

    if mode == "take":

        @app.agent(topic)
        async def count_batches(stream: faust.StreamT) -> None:
            async for batch in stream.take(1000, within=0.005):
                if not seen[0]:
                    started[0], before[0] = time.perf_counter(), len(batch)
                seen[0] += len(batch)
                if seen[0] >= count:
                    report()
    else:

        @app.agent(topic)
        async def count_each(stream: faust.StreamT) -> None:
            async for _ in stream:
                if not seen[0]:
                    started[0], before[0] = time.perf_counter(), 1
                seen[0] += 1
                if seen[0] == count:
                    report()

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def run_empty_agent(mode: str, bootstrap: str, count: int, partitions: int, workdir: Path) -> float:
    log = workdir / f"empty-{mode}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--empty-agent",
            mode,
            "--bootstrap",
            bootstrap,
            "--events",
            str(count),
            "--partitions",
            str(partitions),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    try:
        assert process.stdout is not None
        result: list[dict[str, Any]] = []

        def read() -> None:
            for line in process.stdout:  # type: ignore[union-attr]
                if b"{" in line:  # after the terminal escapes Faust's spinner writes
                    result.append(json.loads(line[line.index(b"{") :]))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(90)
        if not result or "seconds" not in result[0]:
            raise RuntimeError(f"empty agent ({mode}) reported nothing:\n{tail(log)}")
        return float(result[0]["timed"] / result[0]["seconds"])
    finally:
        stop(process)


# ---- 3. plain confluent-kafka loop + the domain core ----------------------------------------


def plain_loop(bootstrap: str, settings: Settings, catalog: Any, count: int) -> float:
    codec = make_codec(settings)
    engine = Engine(catalog, Outputs())
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-plain", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(EVENTS, p, 0) for p in range(settings.topic_partitions)])
    threshold = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)  # as the worker does
    seen = 0
    started = 0.0
    batch: list[Any] = []
    try:
        deadline = time.perf_counter() + 120
        while seen < count and time.perf_counter() < deadline:
            messages = arrivals(consumer, 0.1)
            if messages and not started:
                started = time.perf_counter()
            for message in messages:
                value = message.value()
                if message.error() or value is None:
                    continue
                seen += 1
                event = codec.decode(value, EVENTS)
                if check_event(event, catalog) is None:  # type: ignore[arg-type]
                    batch.append(event)
                if len(batch) >= 1000:
                    engine.process_batch(batch)
                    batch = []
        engine.process_batch(batch)
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
        gc.set_threshold(*threshold)
    if seen < count:
        raise RuntimeError(f"plain loop saw {seen} of {count} records")
    return count / elapsed


# ---- 4. latency at a steady rate --------------------------------------------------------------


class AvailabilityWatcher(threading.Thread):
    """Reads availability.<channel> from `ends` (as read by a Tail): first arrival time per
    cause_event_id. Not from OFFSET_END: it resolves after assign(), so records written in
    between would be missed."""

    def __init__(
        self, bootstrap: str, settings: Settings, channel: str, ends: dict[tuple[str, int], int]
    ) -> None:
        super().__init__(daemon=True)
        self.topic = availability_topic(channel)
        self.codec = make_codec(settings)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-latency",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # Tansu answers an empty fetch only after this long
            }
        )
        n = settings.topic_partitions
        self.consumer.assign(
            [TopicPartition(self.topic, p, ends.get((self.topic, p), 0)) for p in range(n)]
        )
        self.arrived: dict[str, float] = {}
        # when the worker produced each record (its CreateTime, ms), on this process's clock
        self.produced: dict[str, float] = {}
        self.skew = time.time() - time.perf_counter()
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                messages = arrivals(self.consumer, 0.05)
                received = time.perf_counter()
                for message in messages:
                    value = message.value()
                    if message.error() or value is None:
                        continue
                    record = self.codec.decode(value, self.topic)
                    cause = record.cause_event_id  # type: ignore[attr-defined]
                    if record.channel_sku == record_sku(cause):  # type: ignore[attr-defined]
                        self.arrived.setdefault(cause, received)
                        created = message.timestamp()[1] / 1000 - self.skew
                        self.produced.setdefault(cause, created)
        finally:
            self.consumer.close()


def record_sku(cause: str) -> str | None:
    """lat-<i>-<sku>: the SKU whose identity listing the latency event changes."""
    parts = cause.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "lat" else None


def deltas(skus: list[str], count: int, prefix: str, quantity: int, start: Any) -> list[Any]:
    return [
        StockAdjusted(
            event_id=f"{prefix}-{i}-{skus[i % len(skus)]}",
            occurred_at=start + timedelta(microseconds=100 * i),
            source="bench",
            sku=skus[i % len(skus)],
            location=LATENCY_LOCATION,
            mode="delta",
            quantity=quantity,
            reason="manual",
        )
        for i in range(count)
    ]


def paced(
    producer: SourceProducer, events: list[Any], rate: float
) -> tuple[dict[str, float], float]:
    """Produce at `rate`/s; the time of each produce call by event_id, and the rate achieved."""
    encoded = [producer.encode_event(e) for e in events]  # encoding is not part of the path timed
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for i, (event, out) in enumerate(zip(events, encoded, strict=True)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[event.event_id] = time.perf_counter()
        producer.send(out)
    elapsed = time.perf_counter() - started
    return sent, len(events) / elapsed if elapsed > 0 else 0.0


def ms(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.1f} ms"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ---- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--broker", choices=("tansu", "kafka"), default="tansu", help="the embedded broker"
    )
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--locations", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency stage events/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="latency stage duration")
    parser.add_argument(
        "--linger-ms",
        type=int,
        default=20,
        help="latency stage producer's linger.ms (20: what `publish` and the sources use)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="stage 1 stops measuring after this long (a slow topology is rated by its commits)",
    )
    parser.add_argument(
        "--latency-csv",
        type=Path,
        help="write the latency stage's events (sent unix time, to the produce call ms, total ms)",
    )
    parser.add_argument("--empty-agent", choices=["take", "iterate"], help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--partitions", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.empty_agent:
        empty_agent_main(args.empty_agent, args.bootstrap, args.events, args.partitions)
        return

    print(
        f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (the cores may be shared)",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-topology-"))
    settings = Settings(kafka_bootstrap_servers=None, data_dir=workdir)
    n = settings.topic_partitions
    catalog = make_catalog(args.skus, args.locations)
    channels = [c.id for c in catalog.channels]
    started = time.perf_counter()
    events = generate(args.events, args.skus, args.locations)
    gc.collect()
    gc.freeze()  # the generated events live for the whole run: keep the collector off them
    print(
        f"generated {len(events):,} events over {args.skus:,} SKUs x {args.locations} locations "
        f"in {time.perf_counter() - started:.1f} s; {n} partitions",
        flush=True,
    )

    broker = embedded_broker(Settings(embedded_broker=args.broker))  # a fresh, empty one
    worker: subprocess.Popen[bytes] | None = None
    tail_: Tail | None = None
    try:
        broker.start()
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, topic_specs(settings, channels))
        publish(bootstrap, catalog)
        producer = SourceProducer(bootstrap, settings=settings)
        for event in events:
            producer.send_event(event)
        counts = producer.close()
        if counts.events_acked != len(events):
            raise RuntimeError(f"only {counts.events_acked} of {len(events)} events acknowledged")
        count = counts.events_acked
        print(
            f"embedded broker {bootstrap} ({args.broker}, "
            f"started in {broker.startup_seconds:.2f} s); "
            f"{count:,} records on {EVENTS}",
            flush=True,
        )

        # The ceilings first, while no worker runs.
        plain = plain_loop(bootstrap, settings, catalog, count)
        take = run_empty_agent("take", bootstrap, count, n, workdir)
        iterate = run_empty_agent("iterate", bootstrap, count, n, workdir)

        # 1. The full topology.
        log = workdir / "worker.log"
        outputs = [
            POSITIONS,
            ALERTS,
            DLQ,
            *INPUTS[1:],
            *map(availability_topic, channels),
        ]  # not the changelogs: written in the same flush as the positions
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        tail_ = Tail(bootstrap, dict.fromkeys([*INPUTS, *outputs]), n)
        tail_.start()
        while tail_.total(EVENTS) < count:
            time.sleep(0.05)

        def drain(since: float, timeout: float, max_seconds: float | None = None) -> Drain:
            assert worker is not None and tail_ is not None
            return wait_drained(
                tail_, admin, settings.app_id, n, outputs, worker, broker.pid, log,
                timeout=timeout, since=since, max_seconds=max_seconds,
            )  # fmt: skip

        spawned = time.perf_counter()
        worker = start_worker(bootstrap, workdir, log)
        seen = drain(spawned, timeout=args.max_seconds + 120, max_seconds=args.max_seconds)
        first = tail_.first_at[POSITIONS]
        if seen.drained:
            last = tail_.last(outputs)
            events_in = tail_.total(EVENTS)  # plus the expiries the worker appended
            full = events_in / (last - first)
            assert seen.committed_at is not None
            full_committed = events_in / (seen.committed_at - first)
        else:  # capped: events known to be complete, over the time since the first output
            last, events_in = seen.complete[-1]
            full = full_committed = events_in / (last - first)
        wall, worker_cpu, broker_cpu = seen.cpu_between(first, last)
        produced = {
            t: tail_.total(t)
            for t in (POSITIONS, availability_topic(LATENCY_CHANNEL), COMMANDS, DLQ)
        }
        if not seen.drained:  # the latency stage needs a worker that is caught up
            stop(worker)
            skip_backlog(tail_, admin, settings.app_id, n)
            worker = start_worker(bootstrap, workdir, log)

        # 4. Latency at a steady rate, worker caught up.
        skus = [f"SKU-{i:05d}" for i in range(args.skus)]
        at = max(e.occurred_at for e in events) + timedelta(seconds=1)
        lat_producer = SourceProducer(bootstrap, settings=settings, linger_ms=args.linger_ms)
        lat_producer.start_polling()
        for out in deltas(skus, len(skus), "warm", 1000, at):
            lat_producer.send_event(out)
        lat_producer.flush()
        drain(time.perf_counter(), timeout=120)
        tail_.halt.set()
        tail_.join(5)
        watcher = AvailabilityWatcher(bootstrap, settings, LATENCY_CHANNEL, dict(tail_.ends))
        watcher.start()
        total = int(args.rate * args.seconds)
        cpu_before = cpu_seconds(worker.pid), cpu_seconds(broker.pid), time.process_time()
        wall_before = time.perf_counter()
        sent, achieved = paced(
            lat_producer, deltas(skus, total, "lat", 1, at + timedelta(seconds=1)), args.rate
        )
        lat_wall = time.perf_counter() - wall_before
        lat_cpu = [
            (after - before) / lat_wall
            for before, after in zip(
                cpu_before,
                (cpu_seconds(worker.pid), cpu_seconds(broker.pid), time.process_time()),
                strict=True,
            )
        ]
        lat_producer.close()
        # stragglers: until every event is seen, or none arrived for 3 s (at most 20 s)
        give_up, arrived, quiet_since = time.perf_counter() + 20, -1, time.perf_counter()
        while len(watcher.arrived) < total and time.perf_counter() < give_up:
            if len(watcher.arrived) != arrived:
                arrived, quiet_since = len(watcher.arrived), time.perf_counter()
            elif time.perf_counter() - quiet_since > 3:
                break
            time.sleep(0.1)
        watcher.halt.set()
        watcher.join(5)
        # an event never seen counts as infinitely late: percentiles are over every event sent
        latencies = [
            (watcher.arrived[k] - t) * 1000 if k in watcher.arrived else math.inf
            for k, t in sent.items()
        ]
        matched = sum(1 for k in sent if k in watcher.arrived)
        # the two halves: to the worker's produce call, and from it to the arrival here
        to_worker = [
            (watcher.produced[k] - t) * 1000 for k, t in sent.items() if k in watcher.produced
        ]
        to_reader = [(watcher.arrived[k] - watcher.produced[k]) * 1000 for k in watcher.produced]
        if args.latency_csv:  # for finding what the tail is made of (periodic stalls, bursts)
            inf = math.inf
            rows = [  # the send time as unix time, to line up with the worker's own logs
                f"{t + watcher.skew:.4f},{(watcher.produced.get(k, inf) - t) * 1000:.2f},"
                f"{(watcher.arrived.get(k, inf) - t) * 1000:.2f}\n"
                for k, t in sent.items()
            ]
            args.latency_csv.write_text("sent_unix,to_produce_ms,total_ms\n" + "".join(rows))
    finally:
        if tail_ is not None:
            tail_.halt.set()
        stop(worker)
        broker.stop()

    ratio = full / max(take, iterate)
    print()
    if seen.drained:
        print(
            f"1. full topology, 1 worker:    {full:>9,.0f} events/s  ({events_in:,} events in "
            f"{last - first:.2f} s, from the first record on {POSITIONS} to the last output "
            f"record; worker start-up {first - spawned:.2f} s excluded)"
        )
        print(
            f"   to committed offsets:       {full_committed:>9,.0f} events/s  (to the first "
            f"0.25 s check with group {settings.app_id} committed at the end of every input; "
            f"commit interval 1 s)"
        )
    else:
        print(
            f"1. full topology, 1 worker:  >={full:>9,.0f} events/s  (NOT DRAINED: stopped "
            f"{args.max_seconds:g} s after the first output; {events_in:,} of {count:,} events "
            f"complete in {last - first:.2f} s from the first record on {POSITIONS}, counted as "
            f"committed on {EVENTS} less records pending on the internal topics; worker start-up "
            f"{first - spawned:.2f} s excluded; the backlog was then skipped for stage 4)"
        )
    print(
        f"   CPU over that window: worker {worker_cpu / wall:.0%} of a core, broker "
        f"{broker_cpu / wall:.0%}; outputs: " + ", ".join(f"{t} {c:,}" for t, c in produced.items())
    )
    print(
        f"2. empty Faust agent, take():  {take:>9,.0f} events/s  (take(1000, within=0.005), "
        f"first to {count:,}th record)"
    )
    print(f"   empty Faust agent, iterate: {iterate:>9,.0f} events/s  (async for over the stream)")
    print(
        f"3. confluent-kafka + codec + core: {plain:>5,.0f} events/s  (decode, check, "
        f"Engine.process_batch per 1,000; no Faust)"
    )
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"4. latency at {achieved:,.0f} events/s for {args.seconds:g} s, publish to "
        f"availability.{LATENCY_CHANNEL}: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(max(latencies))} "
        f"({matched:,} of {total:,} events seen, matched on cause_event_id; unseen count as "
        f"infinitely late)"
    )
    if to_worker:
        print(
            f"   publish -> the worker's produce call (CreateTime, ms): p50 "
            f"{ms(percentile(to_worker, 0.5))}, p99 {ms(percentile(to_worker, 0.99))}; "
            f"-> arrival here: p50 {ms(percentile(to_reader, 0.5))}, "
            f"p99 {ms(percentile(to_reader, 0.99))}"
        )
    print(
        f"   CPU while publishing: worker {lat_cpu[0]:.0%} of a core, broker {lat_cpu[1]:.0%}, "
        f"this process (producer and consumer) {lat_cpu[2]:.0%}"
    )
    print()
    print(f"ratio full / empty-agent ceiling: {ratio:.2f} (best of take and iterate)")
    print(
        f"goal: full topology >= {FULL_GOAL:.0%} of the empty-agent ceiling: "
        f"{'MET' if ratio >= FULL_GOAL else 'NOT MET'}"
    )
    print(
        f"goal: p99 <= {P99_GOAL_MS:.0f} ms at {args.rate:,.0f} events/s: "
        f"{'MET' if p99 <= P99_GOAL_MS else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
