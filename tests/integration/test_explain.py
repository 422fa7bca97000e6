"""`explain` over the API, live: from the workers' committed SKU states it gives what it gives in
simulate. (The CLI's live `explain` of every listing of every scenario is checked, against
simulate and the formula, in test_topology.py's scenario runs.)"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from streams.api import run_api
from streams.core.explain import explain
from streams.runtime.broker import free_port
from streams.settings import Settings
from streams.simulate import read_catalog, run
from tests.integration.live import LiveSystem

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).parent.parent / "scenarios"


async def test_the_api_explains_and_reads_reservations_back_from_the_live_topics(
    tmp_path: Path,
) -> None:
    scenario = SCENARIOS / "split-hold"
    catalog = read_catalog(scenario / "catalog.yaml")
    with open(scenario / "events.jsonl", "rb") as handle:
        engine, _, _ = run(catalog, handle)
    expected = json.loads((scenario / "expected.json").read_text())
    tokens = {c.id: f"tok-{c.id}" for c in catalog.channels}
    today = datetime.now(UTC).date()  # the API counts backorders from wall time
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        live.publish(scenario / "events.jsonl", stepwise=True)
        live.wait_for(expected, timeout=60)
        settings = Settings(kafka_bootstrap_servers=live.bootstrap, channel_tokens=tokens)
        port, stop, started = free_port(), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_api(
                settings, live.bootstrap, catalog, stop, port, host="127.0.0.1", started=started
            )
        )
        await asyncio.wait_for(started.wait(), 30)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for listing in catalog.listings:
                    want = explain(
                        catalog, engine.skus, listing.channel, listing.channel_sku, today
                    ).to_json()
                    headers = {"Authorization": f"Bearer {tokens[listing.channel]}"}
                    url = f"{base}/explain/{listing.channel}/{listing.channel_sku}"
                    deadline = time.monotonic() + 30
                    while True:  # the API's feeds catch up with the topics
                        async with session.get(url, headers=headers) as response:
                            assert response.status == 200
                            body = await response.json()
                        got = {k: v for k, v in body.items() if k != "published"}
                        if got == want and body["published"] is not None:
                            break
                        assert time.monotonic() < deadline, (got, want)
                        await asyncio.sleep(0.3)
                for item in expected["reservations"]:
                    rid = item["reservation_id"]
                    channel = engine.reservations[rid].channel
                    headers = {"Authorization": f"Bearer {tokens[channel]}"}
                    status, body = await _get(session, f"{base}/reservations/{rid}", headers)
                    assert status == 200, body
                    assert body["status"] == item["status"]
                status, body = await _get(session, f"{base}/reservations/nope", headers)
                assert status == 404, body
        finally:
            stop.set()
            await task


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    """GET as a client should: a 503 (the API's decisions feed still catching up at start) comes
    with a Retry-After and is retried, for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        async with session.get(url, headers=headers) as response:
            body = await response.json()
            if response.status != 503 or time.monotonic() > deadline:
                return response.status, body
            assert response.headers["Retry-After"]
        await asyncio.sleep(0.3)
