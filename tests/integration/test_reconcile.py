"""reconcile on a real broker: drift reported and alerted, corrected by a count, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.simulate import read_catalog, simulate
from tests.integration.live import LiveSystem

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

SCENARIO = Path(__file__).parent.parent / "scenarios" / "basic"


def run(live: LiveSystem, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": live.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "inventory_streams.cli", "reconcile", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_drift_is_reported_alerted_and_corrected_once(tmp_path: Path) -> None:
    catalog = read_catalog(SCENARIO / "catalog.yaml")
    expected = simulate(catalog, (SCENARIO / "events.jsonl").read_bytes().splitlines())
    snapshot = tmp_path / "wms.csv"
    snapshot.write_text(
        "system,sku,location_or_channel,quantity,as_of\n"
        "wms-east,TEE-RED-M,wh-east,38,2026-11-02T00:00:00Z\n"  # agrees
        "wms-east,MUG,wh-east,5,2026-11-02T00:00:00Z\n"  # drift: we have 9 on hand
        "shopify,TEE-RED-M,shopify-us,30,2026-11-02T00:00:00Z\n"  # drift on a channel
        "wms-east,MUG,dock-7,1,2026-11-02T00:00:00Z\n"  # unknown
    )
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        live.publish(SCENARIO / "events.jsonl", stepwise=True)
        live.wait_for(expected, timeout=60)

        audit = run(live, str(snapshot), "--format", "json", "--progress")
        assert audit.returncode == 1, audit.stderr
        report = json.loads(audit.stdout)  # the bars went to stderr: stdout is the JSON alone
        assert "reading inventory.positions" in audit.stderr
        assert re.search(r"checking rows .* 4/4 +rows", audit.stderr), audit.stderr
        statuses = [(r["sku"], r["where"], r["status"]) for r in report["rows"]]
        assert statuses == [
            ("TEE-RED-M", "wh-east", "ok"),
            ("MUG", "wh-east", "drift"),
            ("TEE-RED-M", "shopify-us", "drift"),
            ("MUG", "dock-7", "unmatched"),
        ]
        assert (report["rows"][1]["ours"], report["rows"][1]["difference"]) == (9, -4)
        assert report["summary"]["alerts_published"] == 2
        tolerant = run(live, str(snapshot), "--threshold", "10")
        assert tolerant.returncode == 0, tolerant.stdout
        assert "0 drift" in tolerant.stdout

        corrected = run(live, str(snapshot), "--correct")
        assert corrected.returncode == 1
        assert "published count 5" in corrected.stdout
        assert "a count cannot set it" in corrected.stdout
        deadline = time.monotonic() + 60
        on_hand = None
        while on_hand != 5 and time.monotonic() < deadline:
            time.sleep(0.5)
            on_hand = live.latest("inventory.positions")["MUG|wh-east"]["on_hand"]
        assert on_hand == 5
        counts = [
            e for e in live.latest_all("inventory.events") if e["event_id"].startswith("reconcile-")
        ]
        assert [(e["mode"], e["quantity"], e["source"]) for e in counts] == [
            ("count", 5, "wms-east")
        ]
        drift = [a for a in live.latest_all("inventory.alerts") if a["type"] == "drift"]
        assert {(a["sku"], a["location"], a["channel"]) for a in drift} == {
            ("MUG", "wh-east", None),
            ("TEE-RED-M", None, "shopify-us"),
        }

        after = run(live, str(snapshot), "--format", "json")
        rows = json.loads(after.stdout)["rows"]
        assert "checking rows" not in after.stderr  # stderr is no terminal: no bars unasked
        assert rows[1]["status"] == "ok"  # the correction closed the location's drift

        (tmp_path / "bad.csv").write_text("system,sku,quantity\nx,y,1\n")
        bad = run(live, str(tmp_path / "bad.csv"))
        assert bad.returncode == 2 and "missing: location_or_channel, as_of" in bad.stderr
