"""`up`'s status view, fed known records with no broker: rates per second, p50/p99 from the workers'
histograms, and alerts rolled up by type (40,000 of one import are one line with its count)."""

from __future__ import annotations

import io

from prometheus_client import generate_latest
from rich.console import Console

from inventory_streams.up import Status, render
from streams.metrics import Metrics
from streams.runtime.status import AlertTally, LatencyWindow, RateMeter, quantile


def shown(status: Status) -> list[str]:
    """The view as a person sees it: one string per line."""
    console = Console(file=io.StringIO(), record=True, width=140)
    console.print(render(status, "127.0.0.1:9092", []))
    return [line.rstrip() for line in console.export_text().splitlines()]


def row(lines: list[str], name: str) -> str:
    """The single line whose label is `name` (the table's border characters left out)."""
    found = [line for line in lines if line.strip("│ ").startswith(name)]
    assert len(found) == 1, (name, lines)
    return found[0]


def alert(kind: str, sku: str, message: str) -> dict[str, object]:
    return {"alert_id": f"{kind}-{sku}", "type": kind, "sku": sku, "message": message}


def test_counts_are_shown_with_their_rate_per_second() -> None:
    meter = RateMeter()
    assert meter.update(10.0, {"events": 1_000, "positions": 0, "availability": 0}) == {}
    rates = meter.update(12.0, {"events": 1_200, "positions": 300, "availability": 5})
    assert rates == {"events": 100.0, "positions": 150.0, "availability": 2.5}
    lines = shown(Status(events=1_200, positions=300, availability=5, rates=rates))
    assert "1,200  (100/s)" in row(lines, "events in")
    assert "300  (150/s)" in row(lines, "positions out")
    assert "5  (2.5/s)" in row(lines, "availability updates out")


def test_a_count_that_starts_again_gives_no_negative_rate() -> None:
    meter = RateMeter()
    meter.update(0.0, {"events": 500})
    assert meter.update(1.0, {"events": 20}) == {"events": 0.0}  # a topic recreated by a rebuild


def test_forty_thousand_alerts_of_one_type_are_one_line_with_their_count() -> None:
    tally = AlertTally()
    for i in range(40_000):
        tally.add(alert("stale-count", f"SKU-{i}", f"count of SKU-{i} older than the last"))
    for _ in range(3):
        tally.add(alert("oversell", "MUG", "MUG oversold by 2 at wh-east"))
    lines = shown(Status(alerts=40_003, alert_types=tally))
    assert sum("stale-count" in line for line in lines) == 1
    stale = row(lines, "stale-count")
    assert "40,000" in stale and "SKU-39999" in stale  # the count, and the latest of them
    assert "3 (latest: MUG oversold by 2 at wh-east)" in row(lines, "oversell")
    assert "40,003" in row(lines, "alerts")
    assert len(lines) < 20


def test_beyond_the_busiest_types_the_rest_share_one_line() -> None:
    tally = AlertTally()
    for index in range(10):
        for _ in range(100 - index):
            tally.add(alert(f"kind-{index}", "S", "m"))
    rows = tally.lines(shown=6)
    assert [name.strip() for name, _ in rows] == [
        *(f"kind-{i}" for i in range(6)),
        "4 other types",
    ]
    assert rows[-1][1] == f"{sum(100 - i for i in range(6, 10)):,}"


def test_latency_is_the_p50_and_p99_of_the_workers_histograms_over_the_window() -> None:
    workers = [Metrics(), Metrics()]
    for _ in range(49):
        workers[0].batch_seconds.labels("sku").observe(0.003)
        workers[1].batch_seconds.labels("sku").observe(0.003)
    workers[1].batch_seconds.labels("sku").observe(0.4)
    workers[1].batch_seconds.labels("sku").observe(0.4)
    window = LatencyWindow({"batch latency": "inventory_batch_seconds"})
    texts = [generate_latest(m.registry).decode() for m in workers]
    latency = window.update(texts)
    quantiles = latency["batch latency"]
    assert quantiles is not None and quantiles.count == 100
    # 98 in (2.5 ms, 5 ms], 2 in (250 ms, 500 ms]: interpolated as Prometheus does
    assert abs(quantiles.p50 - (0.0025 + 0.0025 * 50 / 98)) < 1e-9
    assert abs(quantiles.p99 - 0.375) < 1e-9
    assert "3.8 ms / 375.0 ms" in row(shown(Status(latency=latency)), "batch latency p50 / p99")
    # nothing observed since: the window is idle, not the old figures again
    idle = window.update([generate_latest(m.registry).decode() for m in workers])
    assert "idle" in row(shown(Status(latency=idle)), "batch latency p50 / p99")
    workers[0].batch_seconds.labels("sku").observe(0.02)
    again = window.update([generate_latest(m.registry).decode() for m in workers])["batch latency"]
    assert again is not None and again.count == 1 and 0.01 < again.p99 <= 0.025


def test_a_histogram_no_worker_exposes_is_not_shown() -> None:
    window = LatencyWindow({"reservation decision latency": "inventory_api_decision_seconds"})
    assert window.update([generate_latest(Metrics().registry).decode()]) == {}
    assert not any("decision" in line for line in shown(Status()))


def test_a_rank_beyond_the_last_finite_bucket_is_that_bucket_bound() -> None:
    assert quantile(0.99, {0.1: 50.0, 1.0: 90.0, float("inf"): 100.0}) == 1.0
