"""`explain` live: from the workers' committed SKU states it gives what it gives in simulate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streams.core.explain import explain
from streams.simulate import read_catalog, run
from streams.tools import explain_live
from tests.integration.live import LiveSystem

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).parent.parent / "scenarios"


@pytest.mark.parametrize("name", ["bundles-and-backorders", "split-hold"])
def test_live_explain_equals_the_simulated_one(name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS / name
    catalog = read_catalog(scenario / "catalog.yaml")
    with open(scenario / "events.jsonl", "rb") as handle:
        engine, _, _ = run(catalog, handle)
    clock = engine.stream_time.date()
    offline = {
        (li.channel, li.channel_sku): explain(
            catalog, engine.skus, li.channel, li.channel_sku, clock
        ).to_json()
        for li in catalog.listings
    }
    expected = json.loads((scenario / "expected.json").read_text())
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        live.publish(scenario / "events.jsonl", stepwise=True)
        live.wait_for(expected, timeout=60)
        deadline = time.monotonic() + 30
        while True:  # the state's changelog is written at the worker's next commit
            got = {
                key: explain_live(catalog, *key, live.settings, live.bootstrap, clock)
                for key in offline
            }
            if all(got[key][0].to_json() == offline[key] for key in offline):
                break
            assert time.monotonic() < deadline, {
                key: got[key][0].to_text()
                for key in offline
                if got[key][0].to_json() != offline[key]
            }
            time.sleep(0.5)
        for explanation, published in got.values():
            if published is not None:
                assert (published["available"], published["backorderable"]) == (
                    explanation.available,
                    explanation.backorderable,
                )
