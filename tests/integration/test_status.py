"""`up`'s status view reads its counts from the broker: a channel added by a newer catalog is
counted once the view follows it; alerts are read off inventory.alerts and rolled up by type, and
latency comes from the workers' /metrics."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from prometheus_client import start_http_server

from inventory_streams.up import StatusReader
from streams.codec import make_codec
from streams.core.models import Alert
from streams.metrics import Metrics
from streams.runtime.broker import free_port
from streams.runtime.topics import ALERTS, availability_topic, ensure_topics, topic_specs
from streams.settings import Settings
from tests.kafka_helpers import create_topic, produce, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]


def test_the_status_view_counts_the_availability_of_a_channel_it_follows(
    kafka_bootstrap: str,
) -> None:
    settings = Settings()
    ensure_topics(kafka_bootstrap, topic_specs(settings, []))
    first, added = unique_name("status-first"), unique_name("status-added")
    for channel, records in ((first, 2), (added, 3)):
        topic = create_topic(kafka_bootstrap, availability_topic(channel), 2, compacted=True)
        produce(kafka_bootstrap, topic, ((f"S{i}", b"x") for i in range(records)))
    reader = StatusReader(kafka_bootstrap, settings, [first])
    try:
        assert reader.read().availability == 2
        reader.follow([first, added])
        assert reader.read().availability == 2 + 3
    finally:
        reader.close()


def test_the_status_view_reads_alerts_by_type_and_latency_from_the_workers_metrics(
    kafka_bootstrap: str,
) -> None:
    settings = Settings()
    ensure_topics(kafka_bootstrap, topic_specs(settings, []))
    kind = unique_name("burst")  # the session's broker is shared: a type of this test's own
    codec = make_codec(settings)
    now = datetime.now(UTC)
    alerts = (
        Alert(alert_id=f"{kind}-{i}", type=kind, sku=f"S{i}", message=f"m{i}", occurred_at=now)
        for i in range(2_500)
    )
    # one key, one partition: "latest" is the last produced
    produce(kafka_bootstrap, ALERTS, ((kind, codec.encode(a, ALERTS)) for a in alerts))
    metrics = Metrics()
    for _ in range(10):
        metrics.batch_seconds.labels("sku").observe(0.004)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    reader = StatusReader(kafka_bootstrap, settings, [])
    try:
        deadline = time.monotonic() + 30
        status = reader.read([port])
        seen = status.alert_types.by_type
        while (kind not in seen or seen[kind].count < 2_500) and time.monotonic() < deadline:
            status = reader.read([port])  # a burst is read over several passes
        run = status.alert_types.by_type[kind]
        assert (run.count, run.sku, run.message) == (2_500, "S2499", "m2499")
        quantiles = reader.read([port]).latency["batch latency (sku stage)"]
        assert quantiles is None  # nothing observed since the first pass: idle
        metrics.batch_seconds.labels("sku").observe(0.004)
        quantiles = reader.read([port]).latency["batch latency (sku stage)"]
        assert quantiles is not None and quantiles.count == 1 and 0.0025 < quantiles.p50 <= 0.005
    finally:
        reader.close()
        server.shutdown()
        thread.join(5)
