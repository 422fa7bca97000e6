"""The worker's KPIs: what a known sequence of records leaves in the registry, read as Prometheus
reads it (no broker: the core's outputs drive the same Metrics methods the topology calls)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector as PrometheusCollector

from streams.core.models import Alert, OrderCreated
from streams.core.state import SkuState
from streams.metrics import DEAD_LETTER_CLASSES, DriftMetrics, Metrics, reason_class, serve
from streams.reconcile import Finding, drift_alert, drift_origin
from streams.runners.local import Collector, Engine
from streams.runtime.tables import PositionCount, positions_in
from streams.simulate import read_catalog, simulate
from tests.core.builders import catalog, count, ev

SCENARIOS = Path(__file__).parent / "scenarios"


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def order(
    order_id: str, channel: str, *lines: tuple[str, str, int], minute: float = 1
) -> OrderCreated:
    made = ev(
        "order-created",
        minute,
        order_id=order_id,
        channel=channel,
        lines=[{"line_id": lid, "sku": sku, "quantity": q} for lid, sku, q in lines],
    )
    assert isinstance(made, OrderCreated)
    return made


def test_oversold_and_all_order_lines_by_channel_make_the_oversell_rate() -> None:
    cat = catalog()
    collector = Collector()
    engine = Engine(cat, collector)
    metrics = Metrics()
    metrics.channels(c.id for c in cat.channels)
    assert value(metrics, "inventory_oversold_order_lines_total", channel="web") == 0
    web = order("o1", "web", ("1", "A", 2), ("2", "A", 2), ("3", "B", 1))
    amz = order("o2", "amz", ("1", "A", 1), minute=2)
    seen: set[str] = set()
    for event in (count("A", "wh", 3), web, web, amz):  # o1 redelivered: counted once
        if isinstance(event, OrderCreated) and event.order_id not in seen:
            seen.add(event.order_id)
            metrics.order_created(event.channel, len(event.lines))
        before = len(collector.alerts)
        engine.process(event)
        metrics.raised(collector.alerts[before:])
    # A: 3 on hand; line 1 takes 2, line 2 leaves wh at -1, B has nothing; amz's line goes to -2
    assert value(metrics, "inventory_order_lines_total", channel="web") == 3
    assert value(metrics, "inventory_order_lines_total", channel="amz") == 1
    assert value(metrics, "inventory_oversold_order_lines_total", channel="web") == 2
    assert value(metrics, "inventory_oversold_order_lines_total", channel="amz") == 1
    assert value(metrics, "inventory_alerts_total", type="oversell") == 3


def test_an_order_line_oversold_at_two_locations_counts_once() -> None:
    metrics = Metrics()
    at = datetime(2026, 11, 1, tzinfo=UTC)
    alerts = [
        Alert(
            alert_id=f"a-{loc}",
            type="oversell",
            sku="A",
            location=loc,
            channel="web",
            quantity=1,
            ids=["e1", "o1", "1"],
            message="oversold",
            occurred_at=at,
        )
        for loc in ("wh", "store")
    ]
    metrics.raised(alerts)
    assert value(metrics, "inventory_oversold_order_lines_total", channel="web") == 1
    assert value(metrics, "inventory_alerts_total", type="oversell") == 2


def test_dead_letters_of_the_bad_input_scenario_by_reason_class() -> None:
    scenario = SCENARIOS / "bad-input"
    result = simulate(
        read_catalog(scenario / "catalog.yaml"),
        (scenario / "events.jsonl").read_bytes().splitlines(),
    )
    assert len(result["rejected"]) == 13
    metrics = Metrics()
    for rejected in result["rejected"]:
        metrics.dead_letter(rejected["reason"])
    counts = {
        name: value(metrics, "inventory_dead_letters_total", reason=name)
        for name in DEAD_LETTER_CLASSES
    }
    assert counts == {
        "unknown-location": 1,
        "unknown-sku": 1,
        "unknown-channel": 1,
        "malformed": 2,
        "schema": 5,
        "invalid-value": 3,
        "other": 0,
    }


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("empty record (a tombstone): inventory.events carries events only", "malformed"),
        ("envelope cut short at byte 3 of 9", "malformed"),
        ("order-created x: line 1: unknown location 'dock'", "unknown-location"),
        ("the sky fell", "other"),
    ],
)
def test_reasons_the_topology_writes_fall_in_their_class(reason: str, expected: str) -> None:
    assert reason_class(reason) == expected


def test_event_to_availability_latency_is_a_histogram_by_channel() -> None:
    metrics = Metrics()
    metrics.availability_sent("web", caused_at=100.0, now=100.3)
    metrics.availability_sent("web", caused_at=100.0, now=102.0)
    metrics.availability_sent("amz", caused_at=100.0, now=99.0)  # clocks apart: never negative
    bucket = "inventory_event_to_availability_seconds_bucket"
    assert value(metrics, "inventory_event_to_availability_seconds_count", channel="web") == 2
    assert value(metrics, "inventory_event_to_availability_seconds_sum", channel="web") == (
        pytest.approx(2.3)
    )
    assert value(metrics, bucket, channel="web", le="0.25") == 0
    assert value(metrics, bucket, channel="web", le="0.5") == 1
    assert value(metrics, bucket, channel="web", le="2.5") == 2
    assert value(metrics, bucket, channel="amz", le="0.005") == 1


def test_positions_held_count_decoded_and_recovered_states() -> None:
    collector = Collector()
    engine = Engine(catalog(), collector)
    for event in (count("A", "wh", 3), count("A", "store", 1), count("B", "wh", 2)):
        engine.process(event)
    states: list[SkuState] = list(engine.skus.values())
    recovered = [json.loads(json.dumps(s.to_dict())) for s in states]
    assert positions_in(states) == 3
    assert positions_in(recovered) == 3
    assert positions_in([*states[:1], *recovered[1:]]) == 3


def test_positions_held_are_counted_on_write_and_again_after_a_rebalance() -> None:
    engine = Engine(catalog(), Collector())
    engine.process(count("A", "wh", 3))
    held = PositionCount()
    held.recount([(b"A", json.loads(json.dumps(engine.skus["A"].to_dict())))])  # recovered
    assert held.total == 1
    for event in (count("A", "store", 1), count("B", "wh", 2), count("A", "wh", 5)):
        engine.process(event)
        held.put(event.sku.encode(), len(engine.skus[event.sku].locations))  # as the stage does
    assert held.total == 3 == positions_in(engine.skus.values())
    held.recount([(b"B", engine.skus["B"])])  # a rebalance took A's partition away
    assert held.total == 1


def test_drift_found_by_reconcile_is_counted_by_system_and_kind() -> None:
    registry = CollectorRegistry()
    drift = DriftMetrics(registry)
    now = datetime(2026, 11, 2, tzinfo=UTC)

    def finding(system: str, location: str | None, channel: str | None) -> Finding:
        return Finding(
            line=2,
            system=system,
            sku="MUG",
            target=location or channel or "",
            location=location,
            channel=channel,
            theirs=5,
            their_as_of="2026-11-02T00:00:00Z",
            status="drift",
            ours=9,
            difference=-4,
        )

    for f in (
        finding("wms-east", "wh-east", None),
        finding("wms-east", "store-12", None),
        finding("shopify", None, "shopify-us"),
    ):
        drift.found(*drift_origin(drift_alert(f, now)))
    sample = registry.get_sample_value
    name = "inventory_drift_findings_total"
    assert sample(name, {"system": "wms-east", "kind": "on-hand"}) == 2
    assert sample(name, {"system": "shopify", "kind": "available"}) == 1
    assert sample(name, {"system": "shopify", "kind": "on-hand"}) is None


def test_no_metric_is_labelled_by_sku() -> None:
    metrics = Metrics()
    metrics.channels(["web"])
    metrics.consumer_lag.labels("inventory-streams", "inventory.events").set(3)
    labels = {
        name for family in metrics.registry.collect() for s in family.samples for name in s.labels
    }
    assert labels <= {
        "kind",
        "reason",
        "type",
        "status",
        "how",
        "stage",
        "channel",
        "le",
        "group",
        "topic",
    }


# ---- the metrics server: slow clients ----

TIMEOUT = 0.5


@contextmanager
def metrics_server(
    max_connections: int = 8, collector: PrometheusCollector | None = None
) -> Iterator[int]:
    """`serve` on a free loopback port, a counter in it (and `collector`); yields the port."""
    registry = CollectorRegistry()
    Counter("probe_total", "a counter to scrape", registry=registry).inc()
    if collector is not None:
        registry.register(collector)
    server = serve(registry, 0, client_timeout=TIMEOUT, max_connections=max_connections)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def scrape(port: int) -> bytes:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return bytes(response.read())


def stalled(port: int, sent: bytes) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(sent)
    return client


def seconds_until_closed(client: socket.socket, started: float) -> float:
    """Reads until the server closes (EOF or a reset); the seconds since `started`."""
    with client:
        try:
            while client.recv(4096):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


@pytest.mark.parametrize("sent", [b"", b"GET /metr", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"])
def test_a_client_that_never_finishes_its_request_is_cut_off_while_others_scrape(
    sent: bytes,
) -> None:
    with metrics_server() as port:
        started = time.monotonic()
        client = stalled(port, sent)
        assert b"probe_total 1.0" in scrape(port)  # served meanwhile, not queued behind it
        assert time.monotonic() - started < TIMEOUT
        assert TIMEOUT * 0.9 <= seconds_until_closed(client, started) < TIMEOUT + 2


def test_a_client_that_trickles_its_request_is_cut_off_all_the_same() -> None:
    with metrics_server() as port:
        started = time.monotonic()
        client = stalled(port, b"G")
        sent = 0
        client.settimeout(TIMEOUT / 5)
        while time.monotonic() - started < 10:
            try:
                client.sendall(b"E")  # a byte every TIMEOUT / 5: each read is quick
                sent += 1
                assert client.recv(1) == b""  # or the timeout below, until the server closes
                break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        client.close()
    assert time.monotonic() - started < TIMEOUT + 2 and sent > 3


def test_connections_over_the_cap_are_closed_at_once_and_scrapes_resume() -> None:
    with metrics_server(max_connections=2) as port:
        started = time.monotonic()
        first, second = stalled(port, b"GET /"), stalled(port, b"GET /")
        time.sleep(0.1)  # both accepted, each holding a thread
        over = stalled(port, b"")
        assert seconds_until_closed(over, started) < TIMEOUT * 0.9  # not made to wait
        for client in (first, second):
            assert seconds_until_closed(client, started) < TIMEOUT + 2
        time.sleep(0.1)  # their threads give their places back
        assert b"probe_total 1.0" in scrape(port)


# ---- the metrics server: clients that misbehave are one line in the log, no traceback ----


def logged_once(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """The one line streams.metrics logged (waiting up to 5 s for the server's thread); nothing
    went to stderr, where the standard library prints its tracebacks."""
    deadline = time.monotonic() + 5
    lines: list[logging.LogRecord] = []
    while time.monotonic() < deadline and not lines:
        time.sleep(0.05)
        lines = [r for r in caplog.records if r.name == "streams.metrics"]
    time.sleep(0.2)  # anything printed after it lands by now
    assert "Traceback" not in capfd.readouterr().err
    lines = [r for r in caplog.records if r.name == "streams.metrics"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and "\n" not in lines[0].getMessage()
    return lines[0].getMessage()


def test_an_accept_header_prometheus_client_cannot_parse_is_one_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="streams.metrics")
    with metrics_server() as port:
        client = stalled(port, b"GET /metrics HTTP/1.1\r\nAccept: text/plain; version=x\r\n\r\n")
        with client:
            answer = b"".join(iter(lambda: client.recv(4096), b""))  # all of it, to the close
        assert answer.startswith(b"HTTP/1.0 500")
        assert "failed" in logged_once(caplog, capfd)
        assert b"probe_total 1.0" in scrape(port)


class Large:
    """A collector whose exposition is 16 MB: more than the sockets between two processes
    buffer, so a client that does not read blocks the server's write."""

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("large", "x" * 16_000_000, value=1)


def test_a_client_that_does_not_read_its_answer_is_one_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="streams.metrics")
    with metrics_server(collector=Large()) as port:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        with client:
            client.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # and never read the answer
            assert "dropped a client" in logged_once(caplog, capfd)
        assert b"probe_total 1.0" in scrape(port)
