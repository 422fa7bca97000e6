"""`explain` over the API, live: from the workers' committed SKU states it gives what it gives in
simulate, and a worker serving the API explains its own SKUs from its memory, ahead of the
changelog. (The CLI's live `explain` of every listing of every scenario is checked, against
simulate and the formula, in test_topology.py's scenario runs.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streams.api import run_api
from streams.core.catalog import load_catalog
from streams.core.explain import explain
from streams.runtime.broker import free_port
from streams.settings import Settings
from streams.simulate import read_catalog, run
from tests.integration.live import LiveSystem
from tests.integration.test_reservations import (
    CATALOG,
    TOKENS,
    api,
    serving,
    stock,
    wait_until_stable,
)

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

SCENARIOS = Path(__file__).parent.parent / "scenarios"
SET_BY_THE_API = ("published", "state_source")  # besides what `explain` gives


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
                        got = {k: v for k, v in body.items() if k not in SET_BY_THE_API}
                        if got == want and body["published"] is not None:
                            break
                        assert time.monotonic() < deadline, (got, want)
                        await asyncio.sleep(0.3)
                    skus = {c.sku for c in listing.components}  # the API process holds none
                    assert body["state_source"] == dict.fromkeys(skus, "changelog")
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


async def test_a_worker_explains_its_own_sku_from_memory_before_any_commit(tmp_path: Path) -> None:
    """A worker serving the API that commits once an hour: a count it has applied and published is
    in its memory only, not on the `skus` changelog. Its explain shows the count, from the owner;
    the API process, which reads the changelog, does not have it yet."""
    api_port = free_port()
    env = {"CHANNEL_TOKENS": json.dumps(TOKENS), "COMMIT_INTERVAL_SECONDS": "3600"}
    headers = {"Authorization": f"Bearer {TOKENS['web']}"}
    with LiveSystem(CATALOG, tmp_path, clock="wall") as live:
        live.start_worker(0, "--api-port", str(api_port), env=env)
        async with serving(live, api_port) as worker:
            await stock(live, tmp_path, 7)  # its position is published: the worker applied it
            async with api(live) as process, aiohttp.ClientSession() as session:
                status, body = await _get(session, f"{worker}/explain/web/HOT", headers)
                assert status == 200, body
                assert body["state_source"] == {"HOT": "owner"}
                assert _on_hand(body) == 7
                status, body = await _get(session, f"{process}/explain/web/HOT", headers)
                assert status == 200, body
                assert body["state_source"] == {"HOT": "changelog"}
                assert _on_hand(body) == 0  # nothing committed yet
            # the command asks the API, so it too answers from the owner's memory; told to read
            # the committed states, or with no API to ask, it says so and reads them
            owner = await explain_command(live, "--api", worker)
            assert (owner["state_source"], _on_hand(owner)) == ({"HOT": "owner"}, 7)
            committed = await explain_command(live, "--api", worker, "--committed")
            assert (committed["state_source"], _on_hand(committed)) == ({"HOT": "changelog"}, 0)
            nobody = await explain_command(live, "--api", f"http://127.0.0.1:{free_port()}")
            assert (nobody["state_source"], _on_hand(nobody)) == ({"HOT": "changelog"}, 0)
            assert nobody["published"] == committed["published"]  # the same record, read twice


async def explain_command(live: LiveSystem, *args: str) -> dict[str, Any]:
    """`inventory-streams explain web HOT --format json ARGS` against `live`, as a user runs it."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": live.bootstrap,
        "CHANNEL_TOKENS": json.dumps(TOKENS),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "inventory_streams.cli", "explain", "web", "HOT", "--format",
         "json", *args],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    if "--committed" not in args and "owner" not in done.stdout.decode():
        assert b"from the committed SKU states instead" in done.stderr, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


async def test_each_of_two_workers_explains_every_sku_from_the_memory_of_its_owner(
    tmp_path: Path,
) -> None:
    """Two workers serving the API, HOT and MUG on partitions of different owners or not, nothing
    committed: each worker answers for both SKUs, and for the bundle of both, from the owners'
    memory, its own or (passed on, or asked for the state) the other's, never from the empty
    changelog."""
    ports = [free_port(), free_port()]
    env = {"CHANNEL_TOKENS": json.dumps(TOKENS), "COMMIT_INTERVAL_SECONDS": "3600"}
    headers = {"Authorization": f"Bearer {TOKENS['web']}"}
    parts = [{"sku": "HOT", "quantity": 1}, {"sku": "MUG", "quantity": 1}]
    kit = {"channel": "web", "channel_sku": "KIT", "components": parts}
    data = CATALOG.model_dump(mode="json", exclude={"version"})
    catalog = load_catalog({**data, "listings": [*data["listings"], kit]})
    with LiveSystem(catalog, tmp_path, clock="wall") as live:
        for index, port in enumerate(ports):
            live.start_worker(index, "--api-port", str(port), env=env)
        await asyncio.to_thread(wait_until_stable, live)
        async with (
            serving(live, ports[0]) as first,
            serving(live, ports[1]) as second,
            aiohttp.ClientSession() as session,
        ):
            await stock(live, tmp_path, 7, sku="HOT")  # after the rebalance: no commit since
            await stock(live, tmp_path, 5, sku="MUG")
            for base in (first, second):
                for sku, units in (("HOT", 7), ("MUG", 5)):
                    status, body = await _get(session, f"{base}/explain/web/{sku}", headers)
                    assert status == 200, body
                    assert (body["state_source"], _on_hand(body)) == ({sku: "owner"}, units), base
                status, body = await _get(session, f"{base}/explain/web/KIT", headers)
                assert status == 200, body
                assert body["state_source"] == {"HOT": "owner", "MUG": "owner"}, base
                assert body["available"] == 5, base


def _on_hand(body: dict[str, object]) -> int:
    components = body["components"]
    assert isinstance(components, list)
    return sum(location["on_hand"] for location in components[0]["locations"])
