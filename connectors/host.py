"""Channel side of `up`: sink connectors for every channel (and, with --demo, their emulators and a
flash sale to watch) and the webhook receiver, run in one background asyncio loop so the status
view stays responsive. The reservation API is served by the workers (inventory_streams.worker).

`inventory-streams connect` runs the same connectors in the foreground, as a process of their own
(run_connectors): what a deployment without `up` runs next to its workers.

Both follow `inventory.catalog` (unless given a fixed catalog): a channel added there gets its sink
within a catalog check, a channel whose connector settings changed gets a new sink, and a removed
one's sink stops; each stops only after committing what its channel acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiohttp import web
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from connectors.emulators import start_emulators
from connectors.sinks import run_sink
from connectors.sinks.base import InvalidSinkConfig
from connectors.sources.metrics import SourceMetrics
from connectors.sources.webhook import default_sources, start_webhook_receiver
from streams.client import kafka_config
from streams.codec import make_codec
from streams.core.catalog import Catalog, Channel
from streams.core.models import Alert, Availability, parse_event
from streams.errors import InventoryError
from streams.metrics import DriftMetrics, serve
from streams.reconcile import drift_origin
from streams.runtime.catalog_store import LatestCatalog
from streams.runtime.producer import SourceProducer
from streams.runtime.topics import ALERTS, CATALOG, RESERVATION_DECISIONS
from streams.settings import Settings

log = logging.getLogger(__name__)

_CONNECTOR_FIELDS = ("url", "endpoint", "shop_domain")
SINK_RESTART_DELAY = 1.0  # seconds before a failed sink starts again; doubles up to the maximum
SINK_RESTART_MAX_DELAY = 30.0


def configured(channel: Channel) -> bool:
    """A channel whose catalog entry says where its API is."""
    extra = channel.model_extra or {}
    return any(extra.get(name) for name in _CONNECTOR_FIELDS)


class CatalogSource(Protocol):
    """Where the sinks' newer catalogs come from: the latest one when there is news, else None."""

    def __call__(self) -> Catalog | None: ...
    def close(self) -> None: ...


@dataclass
class _RunningSink:
    channel: Channel
    stop: asyncio.Event
    task: asyncio.Task[None]


class ChannelServices:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        catalog: Catalog,
        demo: bool,
        api: str,
        *,
        registry: CollectorRegistry | None = None,
        webhook_host: str = "127.0.0.1",
        strict: bool = False,
        follow: CatalogSource | None = None,
    ) -> None:
        self.settings, self.bootstrap, self.catalog, self.demo = settings, bootstrap, catalog, demo
        self.registry = registry  # the sinks' and the receiver's metrics (a private one if None)
        self.webhook_host = webhook_host  # `up` receives on the loopback address only
        self.strict = strict  # under `up`, a receiver that cannot start is shown, not fatal
        # where newer catalogs come from (LatestCatalog), checked every catalog_check_seconds;
        # None: the sinks of `catalog` run until the end
        self.follow = follow
        self._sinks_running: dict[str, _RunningSink] = {}
        self.acked: Counter[str] = Counter()
        self.errors: list[str] = []
        self.restarts: Counter[str] = Counter()  # channel id -> times its sink started again
        self.webhooks = "starting"
        self.api = (
            api  # served by the workers (inventory_streams.worker): where, for the status view
        )
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="channels", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def status(self) -> dict[str, str]:
        rows = {f"acknowledged by {ch}": f"{n:,}" for ch, n in sorted(self.acked.items())}
        rows["webhook receiver"] = self.webhooks
        if self.api:
            rows["reservation API"] = self.api
        if self.errors:
            restarts = sum(self.restarts.values())
            again = f" ({restarts:,} restarted)" if restarts else ""
            rows["channel errors"] = self.errors[-1][:80] + again
        return rows

    def _on_ack(self, record: Availability) -> None:
        self.acked[record.channel] += 1

    def _run(self) -> None:
        asyncio.run(self._main())

    async def serve(self, report_every: float = 30.0) -> None:
        """In the foreground, until SIGTERM or SIGINT; a line of status every `report_every` s."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        main = asyncio.create_task(self._main(stop))
        while not main.done():
            await asyncio.wait([main], timeout=report_every)
            if not main.done():
                log.info("status: %s", self.report())
        main.result()

    def report(self) -> str:
        return "; ".join(f"{name} {value}" for name, value in self.status().items())

    async def _main(self, stop: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = stop or asyncio.Event()
        receiver = await self._webhooks()
        drift = None
        if self.registry is not None:  # only where metrics are served: the count is for them
            drift = DriftWatch(self.settings, self.bootstrap, DriftMetrics(self.registry))
            drift.start()
        try:
            if self.demo:
                async with start_emulators(self.catalog.channels, self.catalog.listings) as running:
                    await self._sinks(running.channels)
            else:
                await self._sinks([c for c in self.catalog.channels if configured(c)])
        finally:
            if drift is not None:
                await asyncio.to_thread(drift.stop)
            if receiver is not None:
                runner, producer = receiver
                await runner.cleanup()
                producer.close()

    async def _webhooks(self) -> tuple[web.AppRunner, SourceProducer] | None:
        """The webhook receiver, for every source that has a secret (WEBHOOK_SECRETS)."""
        if not self.settings.webhook_secrets:
            self.webhooks = "off (set WEBHOOK_SECRETS to receive webhooks)"
            return None
        try:
            sources = default_sources(self.settings, self.catalog)
            producer = SourceProducer(self.bootstrap, settings=self.settings)
            runner = await start_webhook_receiver(
                self.settings,
                producer,
                sources=sources,
                catalog=self.catalog,
                metrics=SourceMetrics.for_registry(self.registry) if self.registry else None,
                host=self.webhook_host,
            )
        except (InventoryError, OSError) as error:
            if self.strict:  # a process of its own: a receiver that cannot start is a failure
                raise InventoryError(f"webhook receiver not started: {error}") from None
            self.webhooks = f"not started: {error}"
            return None
        shown = "127.0.0.1" if self.webhook_host in ("0.0.0.0", "") else self.webhook_host
        self.webhooks = (
            f"http://{shown}:{self.settings.webhook_port}/webhooks/{{{','.join(sorted(sources))}}}"
        )
        return runner, producer

    async def _sinks(self, channels: list[Channel]) -> None:
        """Run a sink per channel until `up` stops (with no channel, still wait: the webhook
        receiver and the API live as long as this loop), following the catalog if asked to."""
        assert self._stop is not None
        for channel in channels:
            self._start_sink(channel)
        self._ready.set()
        try:
            if self.follow is None:
                await self._stop.wait()
            else:
                await self._follow_catalog(self.follow)
        finally:
            running = list(self._sinks_running.values())
            for sink in running:
                sink.stop.set()
            await asyncio.gather(*(sink.task for sink in running), return_exceptions=True)

    def _start_sink(self, channel: Channel) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self._keep_running(channel, stop))
        self._sinks_running[channel.id] = _RunningSink(channel, stop, task)

    async def _follow_catalog(self, latest: CatalogSource) -> None:
        """Until `up` stops: every catalog check, the sinks of the newest catalog's channels."""
        assert self._stop is not None
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.settings.catalog_check_seconds)
                if self._stop.is_set():
                    return
                try:
                    catalog = await asyncio.to_thread(latest)
                except (InventoryError, KafkaException) as error:  # the broker will be back
                    log.warning("catalog check failed: %s; the sinks go on as they are", error)
                    continue
                if catalog is not None and catalog.version > self.catalog.version:
                    await self._apply_catalog(catalog)
        finally:
            await asyncio.to_thread(latest.close)

    async def _apply_catalog(self, catalog: Catalog) -> None:
        """Stop the sinks of channels removed or changed, then start those of new or changed ones.

        A changed sink stops before its successor starts: it commits what its channel acknowledged,
        and the successor, in the same consumer group, resumes from there.
        """
        wanted = {c.id: c for c in catalog.channels if configured(c)}
        version = f"catalog version {catalog.version}"
        for channel_id, sink in list(self._sinks_running.items()):
            if wanted.get(channel_id) == sink.channel:
                continue
            how = "changed" if channel_id in wanted else "removed"
            log.info("sink %s: %s in %s; stopping it", channel_id, how, version)
            sink.stop.set()
            await asyncio.gather(sink.task, return_exceptions=True)
            del self._sinks_running[channel_id]
        for channel_id, channel in wanted.items():
            if channel_id not in self._sinks_running:
                log.info("sink %s: starting it (%s)", channel_id, version)
                self._start_sink(channel)
        self.catalog = catalog

    async def _keep_running(self, channel: Channel, stop: asyncio.Event) -> None:
        """Run a channel's sink until `stop` (set when `up` stops or the catalog drops or changes
        the channel). A failure is shown at once, does not stop the other channels, and the sink
        starts again after a back-off (1 s, doubling to 30 s): it resumes from its committed
        offsets, so nothing the channel did not acknowledge is lost. A sink whose settings are
        wrong is shown and not started again."""
        delay = SINK_RESTART_DELAY
        while not stop.is_set():
            started = time.monotonic()
            try:
                await run_sink(
                    channel,
                    self.settings,
                    self.bootstrap,
                    stop,
                    registry=self.registry,
                    on_ack=self._on_ack,
                )
                if stop.is_set():
                    return
                log.warning("sink %s ended before up stopped; starting it again", channel.id)
            except InvalidSinkConfig as error:
                self.errors.append(f"{channel.id}: {error}")
                log.error("sink %s not started: %s", channel.id, error)
                return
            except Exception as error:  # whatever it was: shown, then started again
                self.errors.append(f"{channel.id}: {type(error).__name__}: {error}")
                self.restarts[channel.id] += 1
                log.error(
                    "sink %s stopped: %s; starting it again in %g s",
                    channel.id,
                    error,
                    delay,
                    exc_info=error,
                )
            if time.monotonic() - started > SINK_RESTART_MAX_DELAY * 2:
                delay = SINK_RESTART_DELAY  # it had run for a while: not a loop of failures
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, SINK_RESTART_MAX_DELAY)


class DriftWatch:
    """Counts the drift alerts `reconcile` publishes, from the end of inventory.alerts on, in a
    thread of its own: reconcile is a run that ends, this process is what Prometheus scrapes."""

    def __init__(self, settings: Settings, bootstrap: str, metrics: DriftMetrics) -> None:
        self.metrics = metrics
        self._codec = make_codec(settings)
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{settings.app_id}-drift-watch",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(ALERTS, p, OFFSET_END) for p in range(settings.topic_partitions)]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def offer(self, value: bytes | None) -> None:
        """One record of inventory.alerts: a drift alert is counted, anything else ignored."""
        if not value or b"drift" not in value:  # most alerts are not drift: skip their decoding
            return
        try:
            alert = self._codec.decode(value, ALERTS)
        except InventoryError:
            return
        if isinstance(alert, Alert) and alert.type == "drift":
            self.metrics.found(*drift_origin(alert))

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(500, timeout=1.0):
                if message.error() is None:
                    self.offer(message.value())


def run_connectors(
    settings: Settings,
    bootstrap: str,
    catalog: Catalog,
    *,
    host: str = "0.0.0.0",
    metrics_port: int = 0,
    report_every: float = 30.0,
    follow: bool = False,
) -> None:
    """`inventory-streams connect`: a sink for every channel with connector settings and, with
    WEBHOOK_SECRETS, the webhook receiver (on `host`), until SIGTERM or Ctrl-C. With `follow`,
    the sinks follow the catalogs published on inventory.catalog after `catalog`."""
    sinks = [c.id for c in catalog.channels if configured(c)]
    if not sinks and not settings.webhook_secrets and not follow:
        raise InventoryError(
            "nothing to run: no catalog channel has connector settings "
            f"({', '.join(_CONNECTOR_FIELDS)}) and WEBHOOK_SECRETS is empty"
        )
    registry = CollectorRegistry()
    if metrics_port:
        # scraped from other hosts, as before
        serve(
            registry, metrics_port, "0.0.0.0", client_timeout=settings.http_client_timeout_seconds
        )
    services = ChannelServices(
        settings,
        bootstrap,
        catalog,
        False,
        "",
        registry=registry,
        webhook_host=host,
        strict=True,
        follow=LatestCatalog(bootstrap) if follow else None,
    )
    log.info(
        "connect: sinks for %s; webhook receiver %s; catalog version %s%s",
        ", ".join(sinks) or "no channel",
        "on" if settings.webhook_secrets else "off (no WEBHOOK_SECRETS)",
        catalog.version,
        f", following {CATALOG}" if follow else "",
    )
    asyncio.run(services.serve(report_every))
    log.info("connect: stopped; %s", services.report())


class FlashSale:
    """The demo's traffic: stock arrives, then checkout holds from every channel, most of which
    become orders, some released, the rest left to expire, until stopped."""

    def __init__(self, settings: Settings, bootstrap: str, catalog: Catalog, rate: float = 40.0):
        self.producer = SourceProducer(bootstrap, settings=settings)
        # storefronts turn only held reservations into orders: follow the decisions
        self.decisions = Consumer(
            {
                **kafka_config(bootstrap),
                "group.id": "demo-flash-sale",
                "enable.auto.commit": False,
            }
        )
        self.decisions.assign(
            [
                TopicPartition(RESERVATION_DECISIONS, p, OFFSET_END)
                for p in range(settings.topic_partitions)
            ]
        )
        self.held: set[str] = set()
        self.catalog, self.rate = catalog, rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flash-sale", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.close()
        self.decisions.close()

    def _follow_decisions(self) -> None:
        for message in self.decisions.consume(500, timeout=0):
            if message.error() is None and b'"status":"held"' in (message.value() or b""):
                key = message.key()
                assert key is not None  # decisions are keyed by reservation id
                self.held.add(key.decode())

    def _event(self, **fields: object) -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.sent += 1
        self.producer.send_event(
            parse_event(
                {
                    "occurred_at": now,
                    "source": "demo",
                    **fields,
                    "event_id": f"demo-{time.time_ns()}-{self.sent}",
                }
            )
        )

    def _run(self) -> None:
        rnd = random.Random(42)
        skus = sorted({c.sku for li in self.catalog.listings for c in li.components})
        locations = [loc.id for loc in self.catalog.locations]
        for sku in skus:
            for loc in locations:
                self._event(
                    type="stock-adjusted",
                    sku=sku,
                    location=loc,
                    mode="count",
                    quantity=rnd.randint(20, 60),
                )
        self.producer.flush()
        pending: list[tuple[float, str, str, str, int]] = []
        n = 0
        while not self._stop.wait(1 / self.rate):
            n += 1
            channel = rnd.choice(self.catalog.channels)
            sku = rnd.choice(skus)
            rid = f"demo-r{n}-{time.time_ns()}"
            qty = rnd.randint(1, 2)
            self._event(
                type="reservation-requested",
                reservation_id=rid,
                channel=channel.id,
                ttl_seconds=60,
                lines=[{"sku": sku, "quantity": qty}],
            )
            pending.append((time.monotonic() + rnd.uniform(0.5, 3), rid, channel.id, sku, qty))
            due = [p for p in pending if p[0] <= time.monotonic()]
            pending = [p for p in pending if p[0] > time.monotonic()]
            self._follow_decisions()
            for _, rid_, channel_id, sku_, qty_ in due:
                if rid_ not in self.held:
                    continue  # rejected: the shopper saw "sold out"
                roll = rnd.random()
                if roll < 0.7:
                    self._event(
                        type="order-created",
                        order_id=f"o-{rid_}",
                        channel=channel_id,
                        reservation_id=rid_,
                        lines=[{"line_id": "1", "sku": sku_, "quantity": qty_}],
                    )
                elif roll < 0.85:
                    self._event(type="reservation-released", reservation_id=rid_)
            if n % 25 == 0:  # the warehouse restocks now and then
                self._event(
                    type="stock-adjusted",
                    sku=rnd.choice(skus),
                    location=locations[0],
                    mode="delta",
                    quantity=rnd.randint(5, 15),
                    reason="receipt",
                )
            self.producer.poll()
