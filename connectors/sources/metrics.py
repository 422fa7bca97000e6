"""Source metrics, built once per registry from a prefix; labelled by source only (never by SKU)."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Histogram

from connectors.sources.base import Tally

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, SourceMetrics]] = (
    weakref.WeakKeyDictionary()
)


class SourceMetrics:
    """Every source metric; one instance per (registry, prefix), shared by all sources."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "inventory") -> None:
        p, src = prefix, ["source"]
        self.received = Counter(
            f"{p}_source_inputs_received_total",
            "Inputs received (webhook deliveries, file rows, POS sale/return lines)",
            src,
            registry=registry,
        )
        self.produced = Counter(
            f"{p}_source_inputs_produced_total",
            "Inputs that became events on inventory.events (acknowledged by the broker)",
            src,
            registry=registry,
        )
        self.events = Counter(
            f"{p}_source_events_produced_total",
            "Events produced to inventory.events (one input can yield several)",
            src,
            registry=registry,
        )
        self.dead_letters = Counter(
            f"{p}_source_dead_letters_total",
            "Inputs rejected and written to inventory.dlq with their reason",
            src,
            registry=registry,
        )
        self.duplicates = Counter(
            f"{p}_source_duplicates_total",
            "Inputs seen before (replayed webhook, repeated document line): nothing produced",
            src,
            registry=registry,
        )
        self.ignored = Counter(
            f"{p}_source_ignored_total",
            "Valid inputs with nothing to map (e.g. a refund without restock)",
            src,
            registry=registry,
        )
        self.unauthorized = Counter(
            f"{p}_source_unauthorized_total",
            "Webhook requests refused with 401 (missing or wrong signature)",
            src,
            registry=registry,
        )
        self.backpressure = Counter(
            f"{p}_source_backpressure_total",
            "Times a source waited for, or refused work because of, a full producer buffer",
            src,
            registry=registry,
        )
        self.request_seconds = Histogram(
            f"{p}_source_webhook_request_seconds",
            "Webhook handling time, from body read to broker acknowledgement",
            src,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry, prefix: str = "inventory") -> SourceMetrics:
        """The one instance of `registry` and `prefix` (collectors can only register once)."""
        per_prefix = _BY_REGISTRY.setdefault(registry, {})
        if prefix not in per_prefix:
            per_prefix[prefix] = cls(registry, prefix)
        return per_prefix[prefix]

    def record(self, source: str, tally: Tally) -> None:
        """Add a finished tally (an import, a delivery) to the counters of `source`."""
        for counter, value in (
            (self.received, tally.received),
            (self.produced, tally.produced),
            (self.events, tally.events),
            (self.dead_letters, tally.dead_lettered),
            (self.duplicates, tally.duplicates),
            (self.ignored, tally.ignored),
        ):
            if value:
                counter.labels(source).inc(value)
