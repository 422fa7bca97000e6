"""A catalog change reaches the running topology: availability is derived again under it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.core.catalog import Catalog
from streams.runtime.catalog_store import publish
from streams.simulate import read_catalog, simulate
from tests.integration.live import LiveSystem

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).parent.parent / "scenarios" / "bundles-and-backorders"

# The scenario's catalog, changed in every way availability depends on: safety stock, a channel's
# allocation and buffer, a bundle's recipe, a listing removed (TEE-6PK) and a bundle added.
CHANGED = """
locations: [{id: wh-east}, {id: store-12}]
channels:
  - {id: shopify-us, type: shopify, locations: [wh-east, store-12], allocation_percent: 50,
     buffer_units: 1, backorder_horizon_days: 0}
  - {id: amazon-us, type: amazon, locations: [wh-east], allocation_percent: 50, buffer_units: 0,
     backorder_horizon_days: 14}
safety_stock: [{sku: TEE-RED-M, location: wh-east, units: 1}]
listings:
  - {channel: shopify-us, channel_sku: TEE-RED-M, components: [{sku: TEE-RED-M, quantity: 1}]}
  - {channel: shopify-us, channel_sku: GIFT-SET,
     components: [{sku: MUG, quantity: 1}, {sku: TEE-RED-M, quantity: 1}]}
  - {channel: amazon-us, channel_sku: B0TEE-RED-M, components: [{sku: TEE-RED-M, quantity: 1}]}
  - {channel: amazon-us, channel_sku: B0MUG, components: [{sku: MUG, quantity: 1}]}
  - {channel: amazon-us, channel_sku: B0GIFT,
     components: [{sku: MUG, quantity: 1}, {sku: TEE-RED-M, quantity: 3}]}
"""


def expected_after_change(before: Catalog, after: Catalog) -> dict[str, Any]:
    """What simulate gives under the new catalog, plus a zero for every listing it removed."""
    events = (SCENARIO / "events.jsonl").read_bytes().splitlines()
    expected = simulate(after, events)
    kept = {(a["channel"], a["channel_sku"]) for a in expected["availability"]}
    for listing in before.listings:
        if (listing.channel, listing.channel_sku) not in kept:
            expected["availability"].append(
                {
                    "channel": listing.channel,
                    "channel_sku": listing.channel_sku,
                    "available": 0,
                    "backorderable": 0,
                }
            )
    expected["availability"].sort(key=lambda a: (a["channel"], a["channel_sku"]))
    return expected


def catalogs(tmp_path: Path) -> tuple[Catalog, Path, Catalog, dict[str, Any]]:
    """The scenario's catalog, the changed one (as a file, and read), and the result expected."""
    before = read_catalog(SCENARIO / "catalog.yaml")
    changed = tmp_path / "changed.yaml"
    changed.write_text(CHANGED)
    after = read_catalog(changed)
    return before, changed, after, expected_after_change(before, after)


def test_a_published_catalog_change_rederives_availability(tmp_path: Path) -> None:
    before, changed, _, expected = catalogs(tmp_path)
    with LiveSystem(before, tmp_path) as live:
        live.start_worker(0)
        live.publish(SCENARIO / "events.jsonl", stepwise=True)
        first = simulate(before, (SCENARIO / "events.jsonl").read_bytes().splitlines())
        assert live.wait_for(first, timeout=60)["availability"] == first["availability"]
        assert expected["availability"] != first["availability"]  # the change matters
        versions_before = live.versions("availability.shopify-us")

        # the command a retailer runs: publish and announce the new catalog
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": live.bootstrap}
        done = subprocess.run(
            [sys.executable, "-m", "inventory_streams.cli", "catalog", str(changed)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert '"catalog_version": 2' in done.stdout

        live.settle(expected, timeout=30, every=0.5)
        # every key's versions still strictly increase across the change
        for key, versions in live.versions("availability.shopify-us").items():
            assert versions == sorted(set(versions)), key
            assert len(versions) >= len(versions_before.get(key, []))


def test_a_catalog_published_while_no_worker_runs_is_applied_at_start(tmp_path: Path) -> None:
    before, _, after, expected = catalogs(tmp_path)
    with LiveSystem(before, tmp_path) as live:
        live.start_worker(0)
        live.publish(SCENARIO / "events.jsonl", stepwise=True)
        live.wait_idle()
        live.stop_worker(0)
        # published with no announcement and no worker running: the restarted worker must notice
        # that its SKUs were derived under version 1
        assert publish(live.bootstrap, after).version == 2
        live.start_worker(0)
        view = live.wait_for(expected, timeout=60, every=0.5)
        assert view["availability"] == expected["availability"]
        assert view["positions"] == expected["positions"]
