"""replay on a real broker: a rebuild from the log ends where `simulate` ends; dead letters are
re-driven once after a fix."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streams.replay import GroupActive, Start, rebuild, redrive
from streams.runtime.catalog_store import publish
from streams.simulate import read_catalog, simulate
from tests.integration.live import LiveSystem

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).parent.parent / "scenarios"


def test_a_rebuild_from_the_beginning_reproduces_simulate(tmp_path: Path) -> None:
    scenario = SCENARIOS / "late-and-duplicate"
    catalog = read_catalog(scenario / "catalog.yaml")
    expected = simulate(catalog, (scenario / "events.jsonl").read_bytes().splitlines())
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        live.publish(scenario / "events.jsonl")
        assert live.wait_for(expected, timeout=60)["positions"] == expected["positions"]
        live.wait_idle()
        with pytest.raises(GroupActive, match="workers are running"):
            rebuild(live.settings, live.bootstrap, Start(beginning=True), wait=2)
        live.stop_worker(0)
        before = live.position_count()

        report = rebuild(live.settings, live.bootstrap, Start(beginning=True), wait=60)
        assert report.start == {p: 0 for p in range(live.settings.topic_partitions)}
        assert "inventory-streams-skus-changelog" in report.recreated
        assert live.latest("inventory-streams-skus-changelog") == {}  # the old state is gone

        live.start_worker(1)
        deadline = time.monotonic() + 60
        while live.position_count() == before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert live.position_count() > before, "the rebuilt worker wrote no positions"
        view = live.wait_for(expected, timeout=60)
        assert view["positions"] == expected["positions"]
        assert view["availability"] == expected["availability"]
        for channel in catalog.channels:  # versions kept increasing across the rebuild
            for key, versions in live.versions(f"availability.{channel.id}").items():
                assert versions == sorted(set(versions)), (key, versions)


def test_dead_letters_are_re_driven_once_after_a_fix(tmp_path: Path) -> None:
    catalog = read_catalog(SCENARIOS / "basic" / "catalog.yaml")
    base = {"type": "stock-adjusted", "occurred_at": "2026-11-01T08:00:00Z", "source": "wms"}
    lines = [
        # valid but for a location the catalog does not have yet: the worker dead-letters it
        {
            **base,
            "event_id": "n1",
            "sku": "MUG",
            "location": "store-99",
            "mode": "count",
            "quantity": 7,
        },
        {
            **base,
            "event_id": "n2",
            "sku": "MUG",
            "location": "wh-east",
            "mode": "count",
            "quantity": -1,
        },  # refused by publish, and still invalid after any catalog fix
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        assert live.publish(tmp_path / "in.jsonl") == {"published": 1, "rejected": 1}
        deadline = time.monotonic() + 60
        while len(live.latest_all("inventory.dlq")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        reasons = sorted(d["reason"] for d in live.latest_all("inventory.dlq"))
        assert any("unknown location 'store-99'" in r for r in reasons), reasons
        live.stop_worker(0)

        # the fix: the location joins the catalog
        fixed = catalog.model_copy(
            update={
                "locations": [
                    *catalog.locations,
                    catalog.locations[0].model_copy(update={"id": "store-99"}),
                ]
            }
        )
        publish(live.bootstrap, fixed)
        dry = redrive(live.settings, live.bootstrap, None, fixed, dry_run=True)
        assert (dry.read, dry.redriven) == (2, 1)
        first = redrive(live.settings, live.bootstrap, None, fixed)
        assert (first.read, first.redriven, len(first.left)) == (2, 1, 1)
        assert "a count cannot be negative" in first.left[0]["reason"]
        second = redrive(live.settings, live.bootstrap, None, fixed)
        assert (second.read, second.redriven) == (0, 0)  # the committed position held

        live.start_worker(1)
        deadline = time.monotonic() + 60
        positions: dict = {}
        while "MUG|store-99" not in positions and time.monotonic() < deadline:
            time.sleep(0.5)
            positions = live.latest("inventory.positions")
        assert positions["MUG|store-99"]["on_hand"] == 7
