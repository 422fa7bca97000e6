"""`inventory-streams up`: broker, topics, catalog, workers and a live status view, in foreground.

Child processes are stopped on exit, Ctrl-C included; the embedded broker goes with them. A worker
that exits while `up` runs is started again (its state comes back from the tables' changelogs),
unless it exited WORKER_RESTART_LIMIT times within WORKER_RESTART_WINDOW_SECONDS: then `up` stops
and fails.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.live import Live
from rich.table import Table

from connectors.host import ChannelServices, FlashSale
from streams.client import kafka_config
from streams.codec import make_codec
from streams.core.catalog import Catalog
from streams.errors import InventoryError
from streams.metrics import serve
from streams.runtime.broker import open_cluster
from streams.runtime.catalog_store import LatestCatalog, publish
from streams.runtime.offsets import true_end_offsets_many
from streams.runtime.running import announced
from streams.runtime.status import (
    AlertTally,
    LatencyWindow,
    Quantiles,
    RateMeter,
    format_rate,
    format_seconds,
)
from streams.runtime.topics import (
    ALERTS,
    AVAILABILITY_PREFIX,
    DLQ,
    EVENTS,
    POSITIONS,
    ensure_topics,
    topic_specs,
)
from streams.settings import Settings


@dataclass
class Worker:
    index: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_start: int = 0  # where this process's lines begin in the log (restarts append to it)

    def exit_reason(self) -> str:
        """The first error this process logged (the cause, not what broke while it stopped)."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            lines = log.read().decode(errors="replace").splitlines()
        for line in lines:
            if _ERROR_LINE.match(line):
                return line.strip()
        return lines[-1].strip() if lines else "no output"


_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")


@dataclass
class Status:
    events: int = 0
    positions: int = 0
    availability: int = 0
    alerts: int = 0
    dead_letters: int = 0
    lag: int = 0
    restarts: int = 0
    failed: str | None = None  # why `up` stopped before its time (a worker that kept exiting)
    extra: dict[str, str] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)  # per second, by the counts' names
    latency: dict[str, Quantiles | None] = field(default_factory=dict)  # None: idle
    alert_types: AlertTally = field(default_factory=AlertTally)


class RestartPolicy:
    """Start a worker again after it exited, unless it exits over and over (a crash loop)."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._exits: dict[int, list[float]] = {}

    def allow(self, index: int) -> bool:
        """Record an exit of worker `index`; whether to start it again."""
        now = self._clock()
        recent = [t for t in self._exits.get(index, []) if now - t < self.window]
        recent.append(now)
        self._exits[index] = recent
        return len(recent) < self.limit


def start_worker(
    settings: Settings,
    bootstrap: str,
    index: int,
    clock: str,
    log_dir: Path,
    tokens: dict[str, str] | None = None,
) -> Worker:
    """A worker process, serving its metrics on METRICS_PORT + 1 + index; with channel `tokens`
    it serves the reservation API on API_PORT + index (both on the loopback address)."""
    port = settings.metrics_port + 1 + index
    log_path = log_dir / f"worker-{index}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    handle = log_path.open("ab")
    log_start = handle.tell()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    api: list[str] = []
    if tokens:
        env["CHANNEL_TOKENS"] = json.dumps(tokens)
        api = ["--api-port", str(settings.api_port + index), "--api-host", "127.0.0.1"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inventory_streams.cli",
            "worker",
            "--clock",
            clock,
            "--metrics-port",
            str(port),
            "--data-dir",
            str(log_dir / f"worker-{index}"),
            *api,
        ],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    handle.close()
    return Worker(index, port, process, log_path, log_start)


def api_status(settings: Settings, tokens: dict[str, str], workers: int) -> str:
    """Where the workers serve the reservation API, for the status view."""
    if not tokens:
        return "off (set CHANNEL_TOKENS to serve reservations)"
    first, last = settings.api_port, settings.api_port + workers - 1
    where = f"http://127.0.0.1:{first}" + (f" (to {last}, one per worker)" if workers > 1 else "")
    if not settings.channel_tokens:
        where += " (bearer demo-<channel>)"
    return where


def stop_worker(worker: Worker, grace: float = 10.0) -> None:
    if worker.process.poll() is not None:
        return
    worker.process.send_signal(signal.SIGTERM)
    try:
        worker.process.wait(grace)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()


class StatusReader:
    """Reads what a user wants to see straight from Kafka and the workers: record counts and their
    rates, consumer lag, alerts by type, and latency quantiles from the workers' /metrics."""

    def __init__(self, bootstrap: str, settings: Settings, channels: list[str]) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.rates = RateMeter()
        self.latency = LatencyWindow()
        self.alert_types = AlertTally()
        self._codec = make_codec(settings)
        self._alerts: Consumer | None = None  # assigned once inventory.alerts exists
        self.topics = {"events": EVENTS, "positions": POSITIONS, "alerts": ALERTS, "dlq": DLQ}
        self.follow(channels)
        self.consumer = Consumer(
            {
                **kafka_config(bootstrap),
                "group.id": settings.app_id,
                "enable.auto.commit": False,
            }
        )
        self.reader = Consumer(
            {**kafka_config(bootstrap), "group.id": f"status-{uuid.uuid4().hex}"}
        )

    def follow(self, channels: list[str]) -> None:
        """Count the availability topics of these channels from the next read on."""
        self.availability: list[str] = [f"{AVAILABILITY_PREFIX}{c}" for c in channels]

    def _partitions(self, topic: str) -> int:
        meta = self.reader.list_topics(topic, timeout=2).topics.get(topic)
        return len(meta.partitions) if meta and meta.partitions else 0

    def read(self, metrics_ports: Iterable[int] = ()) -> Status:
        """One pass over every topic shown (ends of busy topics as seen within a second), the
        alerts that arrived since the last pass, and the /metrics of the workers on these ports."""
        topics = [EVENTS, POSITIONS, ALERTS, DLQ, *self.availability]
        ends = true_end_offsets_many(
            self.bootstrap, {t: list(range(self._partitions(t))) for t in topics}, 1.0
        )

        def total(topic: str) -> int:
            return sum(end for (t, _), end in ends.items() if t == topic)

        status = Status(
            events=total(EVENTS),
            positions=total(POSITIONS),
            alerts=total(ALERTS),
            dead_letters=total(DLQ),
            availability=sum(total(t) for t in self.availability),
        )
        event_parts = sorted(p for (t, p) in ends if t == EVENTS)
        committed = self.consumer.committed(
            [TopicPartition(EVENTS, p) for p in event_parts], timeout=2
        )
        status.lag = sum(max(0, ends[(EVENTS, c.partition)] - max(c.offset, 0)) for c in committed)
        counts = {
            "events": status.events,
            "positions": status.positions,
            "availability": status.availability,
        }
        status.rates = self.rates.update(time.monotonic(), counts)
        self._read_alerts()
        status.alert_types = self.alert_types
        status.latency = self.latency.update(_scrape(metrics_ports))
        return status

    def _read_alerts(self, budget: float = 0.3) -> None:
        """Decode the alerts that arrived, for up to `budget` seconds (a burst is read over
        several passes)."""
        if self._alerts is None:
            partitions = self._partitions(ALERTS)
            if not partitions:
                return
            self._alerts = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"status-alerts-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                }
            )
            self._alerts.assign([TopicPartition(ALERTS, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            batch = self._alerts.consume(2000, 0.05)
            if not batch:
                return
            for message in batch:
                value = message.value()
                if message.error() is not None or value is None:
                    continue
                try:
                    alert = self._codec.decode(value, ALERTS)
                except InventoryError:
                    continue  # not an alert record: the view counts it, it cannot type it
                self.alert_types.add(alert.model_dump())

    def close(self) -> None:
        self.consumer.close()
        self.reader.close()
        if self._alerts is not None:
            self._alerts.close()


def _scrape(ports: Iterable[int], timeout: float = 0.5) -> list[str]:
    """The Prometheus text of every worker that answers on its loopback metrics port."""
    texts = []
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
                texts.append(r.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            continue  # a worker starting or restarting: the others still count
    return texts


def metrics_status(metrics_port: int, workers: list[Worker]) -> str:
    """Which process serves Prometheus metrics on which port, for the status view."""
    ports = [f"{metrics_port} up"] + [f"{w.metrics_port} worker {w.index}" for w in workers]
    return "127.0.0.1: " + ", ".join(ports)


def render(
    status: Status, bootstrap: str, workers: list[Worker], metrics_port: int | None = None
) -> Table:
    table = Table(title=f"inventory-streams on {bootstrap}  (Ctrl-C to stop)", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rate = status.rates.get
    table.add_row("events in", f"{status.events:,}{format_rate(rate('events'))}")
    table.add_row("positions out", f"{status.positions:,}{format_rate(rate('positions'))}")
    table.add_row(
        "availability updates out", f"{status.availability:,}{format_rate(rate('availability'))}"
    )
    for label, quantiles in status.latency.items():
        table.add_row(f"{label} p50 / p99", _latency(quantiles))
    table.add_row("alerts", f"{status.alerts:,}")
    for name, value in status.alert_types.lines():
        table.add_row(name, value)
    table.add_row("dead letters", f"{status.dead_letters:,}")
    table.add_row("consumer lag (inventory.events)", f"{status.lag:,}")
    alive = sum(1 for w in workers if w.process.poll() is None)
    restarted = f" ({status.restarts:,} restarted)" if status.restarts else ""
    table.add_row("workers alive", f"{alive}/{len(workers)}{restarted}")
    for name, value in status.extra.items():
        table.add_row(name, value)
    if metrics_port is not None:
        table.add_row("metrics (Prometheus)", metrics_status(metrics_port, workers))
    return table


def _latency(quantiles: Quantiles | None) -> str:
    if quantiles is None:
        return "idle"
    return f"{format_seconds(quantiles.p50)} / {format_seconds(quantiles.p99)}"


def serve_metrics(port: int, client_timeout: float = 10.0) -> CollectorRegistry:
    """The registry of `up`'s own process (sinks, webhook receiver, drift), served on `port`."""
    registry = CollectorRegistry()
    serve(registry, port, client_timeout=client_timeout)
    return registry


def stop_on_signals() -> None:
    """SIGTERM (a container runtime, systemd, `kill`) stops `up` as Ctrl-C does: workers,
    connectors and the broker are stopped in order and `up` exits 0. A second one during the
    stop is ignored, so the stop is not cut short half-way.

    And Ctrl-C (SIGINT) stops it even when `up` was started with SIGINT ignored, as a shell
    runs `up &` from a script: Python then leaves it ignored, and `up` never stopped."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread (tests may run up elsewhere)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    # `kill -USR1` prints where every thread of `up` is, for a start or stop that seems stuck
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def run_up(
    settings: Settings,
    catalog: Catalog,
    *,
    workers: int = 1,
    duration: float | None = None,
    demo: bool = False,
    console: Console | None = None,
) -> Status:
    """Run everything until Ctrl-C (or `duration` seconds); returns the last status read."""
    console = console or Console(stderr=True)
    log_dir = settings.data_dir / "up"
    stop_on_signals()
    registry = serve_metrics(settings.metrics_port, settings.http_client_timeout_seconds)
    with open_cluster(settings) as cluster, ExitStack() as stack:
        bootstrap = cluster.bootstrap_servers
        stack.enter_context(announced(settings.data_dir, bootstrap))  # `publish` etc. find it
        console.print(f"[bold]broker[/] {bootstrap} {cluster.description}")
        created = ensure_topics(bootstrap, topic_specs(settings, [c.id for c in catalog.channels]))
        console.print(f"[bold]topics[/] {len(created)} created")
        published = publish(bootstrap, catalog)
        console.print(
            f"[bold]catalog[/] version {published.version}: {len(catalog.channels)} "
            f"channels, {len(catalog.listings)} listings"
        )
        tokens = settings.channel_tokens
        if not tokens and demo:
            tokens = {c.id: f"demo-{c.id}" for c in catalog.channels}
        pool = [
            start_worker(settings, bootstrap, i, "wall", log_dir, tokens) for i in range(workers)
        ]

        def stop_all() -> None:  # the pool as it is at the end: restarted workers included
            for worker in pool:
                stop_worker(worker)

        stack.callback(stop_all)
        restarts = RestartPolicy(
            settings.worker_restart_limit, settings.worker_restart_window_seconds
        )
        console.print(f"[bold]workers[/] {workers} (logs in {log_dir})")
        api = api_status(settings, tokens, workers)
        # the emulators of --demo are started for this catalog's channels: that one only
        follow = None if demo else LatestCatalog(bootstrap)
        channels = ChannelServices(
            settings, bootstrap, published, demo, api, follow=follow, registry=registry
        )
        channels.start()
        stack.callback(channels.stop)
        if demo:
            sale = FlashSale(settings, bootstrap, catalog)
            sale.start()
            stack.callback(sale.stop)
            console.print("[bold]demo[/] channel emulators and a flash sale are running")
        reader = StatusReader(bootstrap, settings, [c.id for c in catalog.channels])
        stack.callback(reader.close)
        status = Status()
        started = time.monotonic()
        restarted = 0
        try:
            with Live(
                render(status, bootstrap, pool, settings.metrics_port),
                console=console,
                refresh_per_second=2,
                transient=False,
            ) as live:
                while duration is None or time.monotonic() - started < duration:
                    time.sleep(1.0)
                    for i, worker in enumerate(pool):
                        code = worker.process.poll()
                        if code is None:
                            continue
                        reason = worker.exit_reason()
                        console.print(
                            f"[red]worker {worker.index} exited with code {code}[/]: {reason} "
                            f"(log: {worker.log_path})"
                        )
                        if not restarts.allow(worker.index):
                            status.failed = (
                                f"worker {worker.index} exited {restarts.limit} times within "
                                f"{restarts.window:g} s; the last time: {reason}"
                            )
                            break
                        pool[i] = start_worker(
                            settings, bootstrap, worker.index, "wall", log_dir, tokens
                        )
                        restarted += 1
                        console.print(
                            f"worker {worker.index} started again; its state comes back from "
                            "the changelogs"
                        )
                    if status.failed:
                        console.print(f"[red]stopping: {status.failed}[/]")
                        break
                    # channels a newer catalog added (the sinks follow it) are counted as well
                    reader.follow([c.id for c in channels.catalog.channels])
                    status = reader.read(w.metrics_port for w in pool)
                    status.restarts = restarted
                    status.extra = channels.status()
                    live.update(render(status, bootstrap, pool, settings.metrics_port))
        except KeyboardInterrupt:
            console.print("stopping...")
        status.restarts = restarted
        return status
