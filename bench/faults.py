"""Faults under load: the live system loses nothing, counts nothing twice and leaves no stale value.

    .venv/bin/python bench/faults.py [--broker kafka|tansu] [--events 50000] [--scenario NAME]

Per scenario, a fresh embedded broker, two stream workers (`worker --clock stream`), the sink
connectors (`inventory-streams connect`) against the Shopify and Amazon emulators, and the
reservation API in this process. The realistic mix of bench/core.py (as the SIGKILL test of
tests/integration/test_topology.py keeps it: orders name their location, no generated holds) is
published at a steady rate with 5 % duplicates (the same event again, up to 500 events later) and
2 % of the stock adjustments moved up to 50 events later; reservations for ten SKUs of their own
come through the API at a steady rate (each 503 or dropped connection retried with its id), and
one held reservation in four is released. Those SKUs never run short (one request in ten asks
for more than exists, a 409 in any order), because a release takes another partition than the
holds and the order the stages took them in is not in the log `simulate` reads. The publishing
ends when the fault ends:

- worker-kill: a random worker SIGKILLed every 15 s, five times, each started again at once;
- broker-pause: the broker SIGSTOPped for 10 s, then SIGCONT;
- broker-kill (Kafka only; Tansu keeps its data in memory): the broker SIGKILLed and started
  again on its data and its port (ZooKeeper stays up);
- sink-kill: `connect` SIGKILLed while the Shopify emulator holds one of its calls (the channel
  applies that call after the sender died), started again a second later;
- channel-outage: both emulators answer 500/429/503 in turn for 20 s;
- worker-partition: one worker cut off from the broker for 15 s. It runs in a network namespace
  whose only way to the broker is a veth pair and two TCP forwarders; the host end of the veth
  goes down. Where no namespace can be made, the worker is SIGSTOPped for 15 s instead (said so).

Checks after each: every published event id is on inventory.events; positions and availability
equal `simulate` of that log (read back per partition: the stream is built so that what crosses
partitions commutes); every `201` is a hold the last decision calls `held`, or `released` when
we released it, and every `409` holds nothing; availability versions never go backwards per key;
each emulator holds exactly the final value of every listing, and its history of values is a
subsequence of the published values in version order (never an older value after a newer one).
Recovery: from the end of the fault until the stages' inputs and the sinks' topics are committed
to their ends, after the last event was published.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from core import machine, make_catalog  # noqa: E402

from connectors.emulators import Emulator, RunningEmulators, start_emulators  # noqa: E402
from connectors.sinks.runner import group_id  # noqa: E402
from streams.api import run_api  # noqa: E402
from streams.core.catalog import Catalog, load_catalog  # noqa: E402
from streams.core.models import parse_event  # noqa: E402
from streams.runtime.broker import EmbeddedKafka, free_port  # noqa: E402
from streams.runtime.offsets import true_end_offsets_many  # noqa: E402
from streams.runtime.producer import SourceProducer  # noqa: E402
from streams.runtime.topics import availability_topic  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.simulate import simulate  # noqa: E402
from tests.integration.live import STAGE_INPUTS, LiveSystem  # noqa: E402
from tests.integration.test_topology import big_stream  # noqa: E402

RESERVED_SKUS = [f"RSV-{i:02d}" for i in range(10)]
TOKENS = {"web": "faults-web", "amz": "faults-amz"}
LEAD = 5.0  # seconds of publishing before the fault starts
NETNS, VETH_HOST, VETH_NS = "faults-ns", "faults-h", "faults-n"
HOST_IP, NS_IP = "10.211.0.1", "10.211.0.2"


# ---- the input ----------------------------------------------------------------------------------


def bench_catalog(skus: int) -> Catalog:
    """bench/core.py's catalog, plus ten SKUs that only the reservations and their counts touch."""
    data = make_catalog(skus, 5).model_dump(mode="json")
    for sku in RESERVED_SKUS:
        for channel in ("web", "amz"):
            data["listings"].append(
                {
                    "channel": channel,
                    "channel_sku": sku,
                    "components": [{"sku": sku, "quantity": 1}],
                }
            )
    return load_catalog(data)


def make_stream(path: Path, events: int, skus: int, seed: int) -> list[dict[str, Any]]:
    """The mix with duplicates and late stock adjustments, its times moved to today (UTC), before
    now: the API's reservations carry today's time, and every worker's stream clock and
    simulate's must fall on one date (availability's backorder horizon counts days)."""
    big_stream(path, events, skus)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    times = [datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) for e in lines]
    t0, span = min(times), (max(times) - min(times)).total_seconds() or 1.0
    room = max(60.0, (now - midnight).total_seconds() - 900)
    scale, days = min(1.0, room / span), (midnight.date() - t0.date()).days
    for event, at in zip(lines, times, strict=True):
        moved = midnight + timedelta(seconds=(at - t0).total_seconds() * scale)
        event["occurred_at"] = moved.isoformat().replace("+00:00", "Z")
        if event.get("eta"):
            eta = datetime.fromisoformat(event["eta"]).date() + timedelta(days=days)
            event["eta"] = eta.isoformat()
    # the reserved SKUs are stocked at one location and never run short, so every hold lands
    # there whatever the order of holds and releases (which take different partitions)
    head = [
        {
            "event_id": f"rsv-count-{sku}",
            "type": "stock-adjusted",
            "occurred_at": midnight.isoformat().replace("+00:00", "Z"),
            "source": "wms",
            "sku": sku,
            "location": "loc-0",
            "mode": "count",
            "quantity": 1_000_000,
        }
        for sku in RESERVED_SKUS
    ]
    rng = random.Random(seed)
    out = head + lines
    for index in range(len(out) - 1, len(head), -1):  # 2 % of stock adjustments arrive late
        if out[index]["type"] == "stock-adjusted" and rng.random() < 0.02:
            event = out.pop(index)
            out.insert(min(len(out), index + rng.randint(1, 50)), event)
    for index in range(len(out) - 1, -1, -1):  # 5 % sent twice
        if rng.random() < 0.05:
            out.insert(min(len(out), index + rng.randint(1, 500)), dict(out[index]))
    path.write_text("".join(json.dumps(e) + "\n" for e in out))
    return out


def publish_paced(bootstrap: str, settings: Settings, events: list[dict[str, Any]], seconds: float):  # type: ignore[no-untyped-def]
    """Publish over `seconds` at an even rate (a thread: the broker may be stopped meanwhile)."""
    producer = SourceProducer(bootstrap, settings=settings)
    started = time.monotonic()
    for index, event in enumerate(events):
        due = started + seconds * index / len(events)
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        producer.send_event(parse_event(event))
    counts = producer.close(timeout=300)
    return counts


# ---- reservations -------------------------------------------------------------------------------


@dataclass
class Reservations:
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    release_failed: dict[str, int] = field(default_factory=dict)  # the answer that was not 200
    retried: int = 0

    async def run(self, base: str, rate: float, stop: asyncio.Event) -> None:
        tasks: list[asyncio.Task[None]] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            index = 0
            while not stop.is_set():
                tasks.append(asyncio.create_task(self.one(session, base, index)))
                index += 1
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)

    async def call(
        self, session: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        """One call, a 503 or a dropped connection retried for 180 s (a client keeps its id)."""
        headers = {"Authorization": f"Bearer {TOKENS['web']}"}
        deadline = time.monotonic() + 180
        while True:
            try:
                async with session.request(method, url, json=body, headers=headers) as r:
                    answer = (r.status, await r.json())
            except (TimeoutError, aiohttp.ClientError) as error:
                answer = (0, {"error": str(error)})
            if answer[0] not in (0, 503) or time.monotonic() > deadline:
                return answer
            self.retried += 1
            await asyncio.sleep(0.5)

    async def one(self, session: aiohttp.ClientSession, base: str, index: int) -> None:
        rid = f"faults-r{index}"
        quantity = 2_000_000 if index % 10 == 5 else 1
        body = {
            "reservation_id": rid,
            "channel": "web",
            # one in ten asks for more than there is: a 409 whatever the order
            "lines": [{"channel_sku": RESERVED_SKUS[index % 10], "quantity": quantity}],
            "ttl_seconds": 7200,  # nothing expires within a run
        }
        answer = await self.call(session, "POST", f"{base}/reservations", body)
        self.answers[rid] = answer
        if answer[0] == 201 and index % 4 == 0:
            await asyncio.sleep(1.0)
            status, _ = await self.call(session, "DELETE", f"{base}/reservations/{rid}", None)
            if status == 200:
                self.released.add(rid)
            else:
                self.release_failed[rid] = status


# ---- lag and the network namespace -------------------------------------------------------------


class Lag:
    """Records between what the stages and the sinks committed and their topics' ends."""

    def __init__(self, bootstrap: str, settings: Settings, catalog: Catalog) -> None:
        self.bootstrap = bootstrap
        parts = list(range(settings.topic_partitions))
        self.groups: dict[str, dict[str, list[int]]] = {
            settings.app_id: {t: parts for t in STAGE_INPUTS}
        }
        for channel in catalog.channels:
            self.groups[group_id(settings, channel)] = {availability_topic(channel.id): parts}

    def __call__(self) -> int:
        wanted = {t: p for topics in self.groups.values() for t, p in topics.items()}
        ends = true_end_offsets_many(self.bootstrap, wanted)
        behind = 0
        self.by_topic: dict[str, int] = {}
        for group, topics in self.groups.items():
            consumer = Consumer(
                {"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 0}
            )
            try:
                asked = [TopicPartition(t, p) for t, ps in topics.items() for p in ps]
                for tp in consumer.committed(asked, timeout=10):
                    left = ends[(tp.topic, tp.partition)] - max(tp.offset, 0)
                    self.by_topic[tp.topic] = self.by_topic.get(tp.topic, 0) + left
                    behind += left
            finally:
                consumer.close()
        return behind


def forward_main(listen: str, target: str) -> None:
    """A TCP forwarder (run inside and outside the namespace by --forward)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = target.rsplit(":", 1)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def serve() -> None:
        host, port = listen.rsplit(":", 1)
        server = await asyncio.start_server(handle, host, int(port))
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


class Namespace:
    """A network namespace reaching the broker's loopback port through a veth pair."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.forwarders: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def available() -> str | None:
        """None, or why no namespace can be made here."""
        if shutil.which("ip") is None:
            return "no iproute2 `ip`"
        probe = subprocess.run(["ip", "netns", "add", "faults-probe"], capture_output=True)
        if probe.returncode != 0:
            return probe.stderr.decode(errors="replace").strip()
        subprocess.run(["ip", "netns", "del", "faults-probe"], check=True)
        return None

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        for argv in (
            ["ip", "netns", "add", NETNS],
            ["ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS],
            ["ip", "link", "set", VETH_NS, "netns", NETNS],
            ["ip", "addr", "add", f"{HOST_IP}/30", "dev", VETH_HOST],
            ["ip", "link", "set", VETH_HOST, "up"],
            ["ip", "-n", NETNS, "addr", "add", f"{NS_IP}/30", "dev", VETH_NS],
            ["ip", "-n", NETNS, "link", "set", VETH_NS, "up"],
            ["ip", "-n", NETNS, "link", "set", "lo", "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        me = [sys.executable, str(Path(__file__).resolve()), "--forward"]
        self.forwarders.append(
            subprocess.Popen([*me, f"{HOST_IP}:{self.port}", f"127.0.0.1:{self.port}"])
        )
        inside = ["ip", "netns", "exec", NETNS]
        self.forwarders.append(
            subprocess.Popen([*inside, *me, f"127.0.0.1:{self.port}", f"{HOST_IP}:{self.port}"])
        )
        time.sleep(1.0)
        return self

    @property
    def wrap(self) -> list[str]:
        return ["ip", "netns", "exec", NETNS]

    def cut(self, down: bool) -> None:
        state = "down" if down else "up"
        subprocess.run(["ip", "link", "set", VETH_HOST, state], check=True)

    def __exit__(self, *exc: object) -> None:
        for process in self.forwarders:
            process.kill()
            process.wait()
        subprocess.run(["ip", "link", "del", VETH_HOST], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


# ---- one scenario -------------------------------------------------------------------------------


@dataclass
class Run:
    live: LiveSystem
    catalog: Catalog
    emulators: RunningEmulators
    connect: subprocess.Popen[bytes] | None = None
    namespace: Namespace | None = None
    seed: int = 21
    log_at: dict[int, int] = field(default_factory=dict)  # where each worker's run starts
    notes: list[str] = field(default_factory=list)

    def start_connect(self) -> None:
        catalog = self.live.workdir / "connect-catalog.yaml"
        data = self.catalog.model_dump(mode="json")
        data["channels"] = [c.model_dump(mode="json") for c in self.emulators.channels]
        catalog.write_text(yaml.safe_dump(data))
        log = (self.live.workdir / "connect.log").open("ab")
        self.connect = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inventory_streams.cli",
                "connect",
                "--catalog",
                str(catalog),
                "--metrics-port",
                str(free_port()),
            ],
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.live.bootstrap},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def supervise(self, stop: asyncio.Event) -> None:
        """Start a worker that exited again, as `up` does, and note why it exited."""
        while not stop.is_set():
            for index, process in list(self.live.workers.items()):
                if process.poll() is None:
                    continue
                with (self.live.workdir / f"worker-{index}.log").open("rb") as log:
                    log.seek(self.log_at.get(index, 0))  # this run of the worker's lines
                    lines = log.read().decode(errors="replace").splitlines()
                errors = [line for line in lines if "Crashed reason=" in line]
                why = errors[0].split("Crashed reason=", 1)[1][:160] if errors else "?"
                self.notes.append(f"worker {index} exited with {process.returncode}: {why}")
                self.live.workers.pop(index)
                self.start_worker(index)
            await asyncio.sleep(0.5)

    def start_worker(self, index: int) -> None:
        log = self.live.workdir / f"worker-{index}.log"
        self.log_at[index] = log.stat().st_size if log.exists() else 0
        wrap = self.namespace.wrap if self.namespace is not None and index == 1 else []
        self.live.start_worker(index, wrap=wrap)


Fault = Callable[[Run], Awaitable[None]]


async def worker_kill(run: Run) -> None:
    rng = random.Random(run.seed)
    for kill in range(5):
        if kill:
            await asyncio.sleep(15)
        index = rng.choice(sorted(run.live.workers))
        await asyncio.to_thread(run.live.kill_worker, index)
        run.start_worker(index)
        run.notes.append(f"killed worker {index}")


async def broker_pause(run: Run) -> None:
    pid = run.live.broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(10)
    finally:
        os.kill(pid, signal.SIGCONT)


async def broker_kill(run: Run) -> None:
    broker = run.live.broker
    assert isinstance(broker, EmbeddedKafka)
    broker.kill()
    started = time.monotonic()
    await asyncio.to_thread(broker.restart)
    run.notes.append(f"broker back in {time.monotonic() - started:.1f} s")


async def sink_kill(run: Run) -> None:
    shopify = run.emulators["web"]
    before = shopify.held
    shopify.hold_next(3.0)
    deadline = time.monotonic() + 30
    while shopify.held == before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert run.connect is not None
    run.connect.send_signal(signal.SIGKILL)
    run.connect.wait()
    run.notes.append("killed mid-call" if shopify.held > before else "no call came in 30 s")
    await asyncio.sleep(1.0)
    run.start_connect()


async def channel_outage(run: Run) -> None:
    for channel in ("web", "amz"):
        run.emulators[channel].outage(20, statuses=(500, 429, 503), retry_after=0.5)
    await asyncio.sleep(20)
    injected = {c: run.emulators[c].injected for c in ("web", "amz")}
    run.notes.append(f"refused calls {injected}")


async def worker_partition(run: Run) -> None:
    if run.namespace is not None:
        run.namespace.cut(True)
        try:
            await asyncio.sleep(15)
        finally:
            run.namespace.cut(False)
        return
    process = run.live.workers[1]
    process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(15)
    finally:
        process.send_signal(signal.SIGCONT)


@dataclass(frozen=True)
class Scenario:
    fault: Fault
    span: float  # seconds the fault takes, about
    brokers: tuple[str, ...] = ("kafka", "tansu")


SCENARIOS = {
    "worker-kill": Scenario(worker_kill, 60),
    "broker-pause": Scenario(broker_pause, 10),
    "broker-kill": Scenario(broker_kill, 10, ("kafka",)),
    "sink-kill": Scenario(sink_kill, 2),
    "channel-outage": Scenario(channel_outage, 20),
    "worker-partition": Scenario(worker_partition, 15),
}


# ---- checks -------------------------------------------------------------------------------------


def stale_in(history: list[int], published: list[int]) -> bool:
    """Whether `history` is not a subsequence (repeats allowed) of `published`."""
    at = 0
    for value in history:
        while at < len(published) and published[at] != value:
            at += 1
        if at == len(published):
            return True
    return False


def differing(
    view: dict[str, Any], expected: dict[str, Any], kind: str, key: tuple[str, ...]
) -> int:
    """Records of `kind` that differ, or that only one side has."""
    live = {tuple(r[k] for k in key): r for r in view[kind]}
    want = {tuple(r[k] for k in key): r for r in expected[kind]}
    return sum(live.get(k) != want.get(k) for k in live.keys() | want.keys())


def checks(
    run: Run, events: list[dict[str, Any]], reservations: Reservations, log_path: Path
) -> dict[str, Any]:
    from streams.tools import read_topic

    live = run.live
    log = [r["value"] for r in read_topic("inventory.events", live.settings, live.bootstrap)]
    ids = {e["event_id"] for e in log}
    lines = [json.dumps(e) for e in log]
    log_path.write_text("\n".join(lines) + "\n")
    expected = simulate(run.catalog, lines)
    deadline = time.monotonic() + 240
    while (view := live.view()) != {k: expected[k] for k in ("positions", "availability")}:
        if time.monotonic() > deadline:
            break
        time.sleep(5)  # dead workers meanwhile are started again by supervise()
    (log_path.parent / "view.json").write_text(json.dumps(view, indent=1))
    (log_path.parent / "expected.json").write_text(json.dumps(expected, indent=1, default=str))
    result: dict[str, Any] = {
        "ids missing from the log": len({e["event_id"] for e in events} - ids),
        "positions differing": differing(view, expected, "positions", ("sku", "location")),
        "on-hand units off": sum(p["on_hand"] for p in view["positions"])
        - sum(p["on_hand"] for p in expected["positions"]),
        "committed units off": sum(p["committed"] for p in view["positions"])
        - sum(p["committed"] for p in expected["positions"]),
        "availability differing": differing(
            view, expected, "availability", ("channel", "channel_sku")
        ),
    }
    decisions = live.latest("inventory.reservation-decisions")
    wrong: list[str] = []
    for rid, (status, body) in reservations.answers.items():
        final = decisions.get(rid, {}).get("status")
        if status == 201 and rid in reservations.release_failed:
            bad = True  # the release was not answered 200: say what it got
            body = {"release answered": reservations.release_failed[rid]}
        elif status == 201:
            bad = final != ("released" if rid in reservations.released else "held")
        else:  # a 409 holds nothing; anything else is no answer within the clients' retries
            bad = status != 409 or final == "held"
        if bad:
            wrong.append(f"{rid}: {status} {str(body)[:120]}, finally {final}")
    statuses: dict[int, int] = {}
    for status, _ in reservations.answers.values():
        statuses[status] = statuses.get(status, 0) + 1
    result["reservations"] = (
        f"{statuses} answered, {len(reservations.released)} released, "
        f"{reservations.retried} retries"
    )
    result["reservations wrong"] = len(wrong)
    if wrong:
        result["wrong ones"] = "; ".join(wrong[:3])
    backwards = repeated = 0
    final: dict[str, dict[str, int]] = {}
    values: dict[str, dict[str, list[int]]] = {}
    for channel in run.catalog.channels:
        topic = availability_topic(channel.id)
        for record in read_topic(topic, live.settings, live.bootstrap):
            versions = values.setdefault(channel.id, {}).setdefault(record["key"], [])
            value = record["value"]
            if versions and value["version"] < versions[-1]:
                backwards += 1
            elif versions and value["version"] == versions[-1]:
                repeated += 1
            versions.append(value["version"])
            final.setdefault(channel.id, {})[record["key"]] = value["available"]
            values.setdefault(f"{channel.id}:available", {}).setdefault(record["key"], []).append(
                value["available"]
            )
    result["versions backwards"] = backwards
    result["versions repeated"] = repeated
    return result | {"_final": final, "_values": values}


async def channel_checks(run: Run, result: dict[str, Any], timeout: float) -> None:
    final, values = result.pop("_final"), result.pop("_values")
    deadline = time.monotonic() + timeout
    for channel in ("web", "amz"):
        emulator: Emulator = run.emulators[channel]
        while True:
            held = emulator.final_values()  # type: ignore[attr-defined]
            wrong = sum(held.get(k) != v for k, v in final[channel].items())
            if wrong == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        history = emulator.history  # type: ignore[attr-defined]
        stale = sum(
            stale_in(seen, values[f"{channel}:available"].get(sku, []))
            for sku, seen in history.items()
        )
        result[f"{channel} not final"] = wrong
        result[f"{channel} stale"] = stale
        result[f"{channel} calls"] = len(emulator.requests)


async def scenario(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    spec = SCENARIOS[name]
    os.environ["EMBEDDED_BROKER"] = args.broker
    catalog = bench_catalog(args.skus)
    events = make_stream(workdir / "events.jsonl", args.events, args.skus, seed=args.seed)
    window = max(len(events) / args.max_rate, LEAD + spec.span)
    with LiveSystem(catalog, workdir) as live:
        async with start_emulators(catalog.channels, catalog.listings) as emulators:
            run = Run(live, catalog, emulators, seed=args.seed)
            namespace: Namespace | None = None
            if name == "worker-partition":
                why = Namespace.available()
                if why is None:
                    assert live.broker.port is not None
                    namespace = Namespace(live.broker.port).__enter__()
                    run.namespace = namespace
                else:
                    run.notes.append(f"no network namespace ({why}): worker SIGSTOPped instead")
            try:
                run.start_worker(0)
                run.start_worker(1)
                run.start_connect()
                stop_supervising = asyncio.Event()
                supervisor = asyncio.create_task(run.supervise(stop_supervising))
                settings = Settings(kafka_bootstrap_servers=live.bootstrap, channel_tokens=TOKENS)
                stop_api, started, stop_clients = asyncio.Event(), asyncio.Event(), asyncio.Event()
                port = free_port()
                api = asyncio.create_task(
                    run_api(
                        settings, live.bootstrap, catalog, stop_api, port,
                        host="127.0.0.1", decision_timeout=10.0, started=started,
                    )
                )  # fmt: skip
                await asyncio.wait_for(started.wait(), 60)
                await asyncio.to_thread(live.wait_idle, 120)  # both workers up, catalog read
                reservations = Reservations()
                clients = asyncio.create_task(
                    reservations.run(
                        f"http://127.0.0.1:{port}", args.reservation_rate, stop_clients
                    )
                )
                publishing = asyncio.create_task(
                    asyncio.to_thread(publish_paced, live.bootstrap, live.settings, events, window)
                )
                await asyncio.sleep(window - spec.span)
                fault_started = time.monotonic()
                await spec.fault(run)
                fault_ended = time.monotonic()
                counts = await publishing
                stop_clients.set()
                await clients
                lag = Lag(live.bootstrap, live.settings, catalog)
                best, progressed = -1, time.monotonic()
                while (behind := await asyncio.to_thread(lag)) > 0:
                    if best < 0 or behind < best:
                        best, progressed = behind, time.monotonic()
                    elif time.monotonic() - progressed > 90:  # stuck: say so, check anyway
                        stuck = {t: n for t, n in lag.by_topic.items() if n}
                        run.notes.append(f"lag stuck at {behind:,} records for 90 s: {stuck}")
                        break
                    await asyncio.sleep(0.25)
                recovered = time.monotonic() - fault_ended
                result = await asyncio.to_thread(
                    checks, run, events, reservations, workdir / "log.jsonl"
                )
                await channel_checks(run, result, timeout=120)
                stop_supervising.set()
                await supervisor
                stop_api.set()
                await api
            finally:
                if run.connect is not None:
                    run.connect.terminate()
                    run.connect.wait()
                if namespace is not None:
                    for index in list(live.workers):
                        live.stop_worker(index)
                    namespace.__exit__()
    return {
        "published": f"{len(events):,} records ({counts}) over {window:.0f} s",
        "fault": f"{fault_ended - fault_started:.1f} s; " + "; ".join(run.notes),
        **result,
        "lag left": behind,
        "recovery s": round(recovered, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--max-rate", type=float, default=1_500.0, help="events/s at most")
    parser.add_argument("--reservation-rate", type=float, default=20.0, help="requests/s")
    parser.add_argument("--seed", type=int, default=21, help="duplicates, reordering, kills")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--forward", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward:
        forward_main(*args.forward)
        return
    print(f"machine: {machine()}; broker {args.broker}", flush=True)
    names = args.scenario or [n for n, s in SCENARIOS.items() if args.broker in s.brokers]
    failed = 0
    for name in names:
        if args.broker not in SCENARIOS[name].brokers:
            print(f"{name}: does not apply to {args.broker}", flush=True)
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-faults-{name}-"))
        started = time.monotonic()
        result = asyncio.run(scenario(name, args, workdir))
        bad = [
            k
            for k, v in result.items()
            if isinstance(v, int) and k not in ("recovery s",) and not k.endswith("calls") and v
        ]
        failed += bool(bad)
        verdict = "FAILED " + ", ".join(bad) if bad else "all checks pass"
        print(f"{name} ({args.broker}, {time.monotonic() - started:.0f} s): {verdict}", flush=True)
        for key, value in result.items():
            print(f"  {key}: {value}", flush=True)
        if args.keep or bad:
            print(f"  work directory: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average now {os.getloadavg()[0]:.2f}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
