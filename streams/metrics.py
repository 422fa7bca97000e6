"""Worker metrics, built in one place from an injected registry: units in names, no SKU labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, prefix: str = "inventory"
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r, p = self.registry, prefix
        self.events_in = Counter(
            f"{p}_events_in_total", "Business events read from inventory.events", registry=r
        )
        self.records_out = Counter(
            f"{p}_records_out_total", "Records produced, by kind", ["kind"], registry=r
        )
        self.dead_letters = Counter(
            f"{p}_dead_letters_total", "Records sent to inventory.dlq", registry=r
        )
        self.alerts = Counter(f"{p}_alerts_total", "Alerts raised, by type", ["type"], registry=r)
        self.reservations = Counter(
            f"{p}_reservation_decisions_total",
            "Reservation decisions, by outcome",
            ["status"],
            registry=r,
        )
        self.taken_now = Counter(
            f"{p}_api_requests_taken_total",
            "Requests of the API a worker serves, by how the SKU stage took them: `now` (at the "
            "broker's acknowledgement, in the process) or `fetched` (by the stage's next fetch)",
            ["how"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_seconds",
            "Time to process one batch, by stage",
            ["stage"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
