"""Sink metrics, built once per registry from a prefix; labelled by channel only (never by SKU)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.metrics import consumer_lag_gauge

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, SinkMetrics]] = (
    weakref.WeakKeyDictionary()
)


class SinkMetrics:
    """Every sink metric; one instance per (registry, prefix), shared by all channels."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "inventory") -> None:
        p, ch = prefix, ["channel"]
        self.records_received = Counter(
            f"{p}_sink_records_received_total",
            "Availability records read from availability.<channel>",
            ch,
            registry=registry,
        )
        self.records_coalesced = Counter(
            f"{p}_sink_records_coalesced_total",
            "Records replaced by a newer version of the same channel_sku before being sent",
            ch,
            registry=registry,
        )
        self.records_skipped = Counter(
            f"{p}_sink_records_skipped_total",
            "Records not sent: a version as new or newer was already pending or acknowledged",
            ch,
            registry=registry,
        )
        self.records_acked = Counter(
            f"{p}_sink_records_acked_total",
            "Records the channel acknowledged",
            ch,
            registry=registry,
        )
        self.dead_letters = Counter(
            f"{p}_sink_dead_letters_total",
            "Records the channel rejected for good, written to inventory.dlq",
            ch,
            registry=registry,
        )
        self.calls = Counter(
            f"{p}_sink_calls_total",
            "HTTP calls made to the channel API (all kinds)",
            ch,
            registry=registry,
        )
        self.call_failures = Counter(
            f"{p}_sink_call_failures_total",
            "Calls that failed as a whole (429, 5xx, throttled, connection) and were retried",
            ch,
            registry=registry,
        )
        self.call_seconds = Histogram(
            f"{p}_sink_call_seconds",
            "Duration of one channel API call",
            ch,
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.ack_latency = Histogram(
            f"{p}_sink_ack_latency_seconds",
            "From the first availability record not yet on the channel to its acknowledgement",
            ch,
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.pending = Gauge(
            f"{p}_sink_pending_records",
            "Distinct channel_skus waiting to be sent or in flight",
            ch,
            registry=registry,
        )
        self.throttle_wait = Counter(
            f"{p}_sink_throttle_wait_seconds_total",
            "Time spent waiting for the channel's rate limit or cost budget",
            ch,
            registry=registry,
        )

        self.consumer_lag = consumer_lag_gauge(registry, prefix)  # set by run_sink, if served
        self._staleness = _Staleness(f"{p}_sink_staleness_seconds")
        registry.register(self._staleness)

    def watch(self, channel: str, age: Callable[[], float]) -> None:
        """Report `age()` as the channel's staleness at every scrape (a bound method of the
        channel's engine; the latest one of a channel wins, and it goes with its engine)."""
        self._staleness.ages[channel] = weakref.WeakMethod(age)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry, prefix: str = "inventory") -> SinkMetrics:
        """The one instance for this registry and prefix (metrics cannot be registered twice)."""
        per_prefix = _BY_REGISTRY.setdefault(registry, {})
        if prefix not in per_prefix:
            per_prefix[prefix] = cls(registry, prefix)
        return per_prefix[prefix]


class _Staleness(Collector):
    """Per channel, the age of the oldest value the channel has not acknowledged, read at scrape
    time: a gauge set on events would stop ageing while nothing happens, just when it matters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ages: dict[str, weakref.WeakMethod[Callable[[], float]]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            self.name,
            "Age of the oldest availability value the channel has not acknowledged (0: none)",
            labels=["channel"],
        )
        for channel, ref in sorted(self.ages.items()):
            age = ref()
            if age is not None:
                family.add_metric([channel], age())
        yield family
