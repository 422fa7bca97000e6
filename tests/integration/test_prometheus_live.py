"""Debian's Prometheus scraping `up --demo` on loopback: every KPI of issue 20 can be queried
over its HTTP API, as a retailer's Prometheus would see it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from streams.runtime.broker import free_port
from tests.deploy.helpers import DEPLOY, missing, tool
from tests.integration.test_up import free_ports, reserve_while_up, up_env

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

PROMETHEUS = tool("prometheus")
UP_CONFIG = DEPLOY / "prometheus" / "up.yml"

# one query per KPI, each true (a non-empty result) once the demo has run a little
KPIS = {
    "worker up": 'up{job="inventory-workers"} == 1',
    "order lines by channel": "sum by (channel) (inventory_order_lines_total) > 0",
    "oversold order lines by channel": "inventory_oversold_order_lines_total",
    "event-to-availability latency": (
        "sum by (channel) (inventory_event_to_availability_seconds_count) > 0"
    ),
    "channel acknowledgement latency": (
        "sum by (channel) (inventory_sink_ack_latency_seconds_count) > 0"
    ),
    "channel staleness": "inventory_sink_staleness_seconds >= 0",
    "reservation decision latency": "inventory_api_decision_seconds_count > 0",
    "consumer lag of the workers": 'inventory_consumer_lag_records{topic="inventory.events"} >= 0',
    "consumer lag of the sinks": (
        'inventory_consumer_lag_records{group="inventory-streams.sink.shopify-us"} >= 0'
    ),
    "dead letters by reason class": 'inventory_dead_letters_total{reason="malformed"}',
    "drift by system and kind": (
        'inventory_drift_findings_total{system="wms-live", kind="on-hand"} == 1'
    ),
    "positions held": "inventory_positions_held > 0",
    "listings held": "inventory_listings_held >= 0",
}


def query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError):
        return []  # not up yet
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def rule_health(port: int) -> dict[str, str]:
    """Each alert rule Prometheus loaded, with its health after its last evaluation."""
    url = f"http://127.0.0.1:{port}/api/v1/rules"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    return {r["name"]: r["health"] for g in body["data"]["groups"] for r in g["rules"]}


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """`up --demo` with its metrics on METRICS_PORT + i; (METRICS_PORT, its environment)."""
    base = free_ports(3)
    env = up_env(METRICS_PORT=str(base), API_PORT=str(free_ports(1)))
    log = (tmp_path / "up.out").open("wb")
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inventory_streams.cli",
            "up",
            "--demo",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield base, {**env, "DATA_DIR": str(tmp_path)}
    finally:
        stop(up)
        log.close()


@pytest.mark.skipif(PROMETHEUS is None, reason=missing("prometheus"))
def test_prometheus_scrapes_every_kpi_from_up_demo(
    tmp_path: Path, demo: tuple[int, dict[str, str]]
) -> None:
    assert PROMETHEUS is not None
    base, env = demo
    # deploy/prometheus/up.yml, its ports moved to this `up`'s, scraping every second
    config = yaml.safe_load(UP_CONFIG.read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(UP_CONFIG.parent / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [
                f"127.0.0.1:{int(target.rsplit(':', 1)[1]) - 9100 + base}"
                for target in static["targets"]
            ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 90
        # a count newer than any record: the live state differs, so reconcile finds drift
        as_of = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        snapshot = tmp_path / "wms.csv"
        snapshot.write_text(
            f"system,sku,location_or_channel,quantity,as_of\nwms-live,MUG,wh-east,100000,{as_of}\n"
        )
        reconciled = False
        waiting = dict(KPIS)
        while waiting and time.monotonic() < deadline:
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            if not reconciled and query(port, KPIS["positions held"]):
                # once the demo's stock is in: the drift alert reaches `up`'s drift watch
                audit = subprocess.run(
                    [sys.executable, "-m", "inventory_streams.cli", "reconcile", str(snapshot)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert audit.returncode == 1, audit.stdout + audit.stderr  # 1: drift found
                # the demo's shoppers go through the topic: one request through the API
                status, _ = reserve_while_up(int(env["API_PORT"]), deadline, "live-prometheus-1")
                assert status in (201, 409)
                reconciled = True
            waiting = {name: expr for name, expr in waiting.items() if not query(port, expr)}
            time.sleep(1)
        assert not waiting, (
            f"no sample for {sorted(waiting)}; up said:\n"
            + ((tmp_path / "up.out").read_text(errors="replace")[-3000:])
        )
        # the deploy rules, evaluated each second on these live series, all without an error
        health = rule_health(port)
        assert {"InventoryOversell", "InventoryChannelStale", "InventoryDrift"} <= set(health)
        assert set(health.values()) == {"ok"}, health
    finally:
        stop(prometheus)
