"""`up`'s channel side: a sink that fails is shown and started again; the others go on."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from connectors.sinks.base import InvalidSinkConfig
from streams.core.catalog import Channel, load_catalog
from streams.runtime import channels as channels_module
from streams.runtime.channels import SINK_RESTART_MAX_DELAY, ChannelServices
from streams.settings import Settings

pytestmark = pytest.mark.looptime  # the back-off waits take loop time only

CATALOG = load_catalog(
    {
        "locations": [{"id": "wh"}],
        "channels": [{"id": ch, "locations": ["wh"]} for ch in ("flaky", "steady", "misset")],
        "listings": [],
    }
)


class FakeSinks:
    """Stands in for run_sink: `flaky` fails `failures` times, `misset` has wrong settings."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts: dict[str, list[float]] = {}

    async def __call__(
        self, channel: Channel, _settings: Settings, _bootstrap: str, stop: asyncio.Event, **_: Any
    ) -> None:
        loop = asyncio.get_running_loop()
        self.starts.setdefault(channel.id, []).append(loop.time())
        if channel.id == "misset":
            raise InvalidSinkConfig("no access token")
        if channel.id == "flaky" and self.failures:
            self.failures -= 1
            raise ConnectionResetError("the channel closed the connection")
        await stop.wait()


async def run_for(services: ChannelServices, seconds: float) -> None:
    services._stop = asyncio.Event()
    running = asyncio.create_task(services._sinks(list(CATALOG.channels)))
    await asyncio.sleep(seconds)
    services._stop.set()
    await running


def services() -> ChannelServices:
    return ChannelServices(Settings(), "127.0.0.1:9", CATALOG, demo=False, api="off")


async def test_a_failing_sink_starts_again_with_a_growing_back_off(monkeypatch: Any) -> None:
    sinks = FakeSinks(failures=7)
    monkeypatch.setattr(channels_module, "run_sink", sinks)
    channel_side = services()
    await run_for(channel_side, 200.0)
    flaky = sinks.starts["flaky"]
    assert len(flaky) == 8  # seven failures, then it ran until stopped
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(flaky)]
    assert gaps == [1, 2, 4, 8, 16, SINK_RESTART_MAX_DELAY, SINK_RESTART_MAX_DELAY]
    assert channel_side.restarts == {"flaky": 7}
    # the others were not held up: steady started once and ran; misset was shown, not retried
    assert sinks.starts["steady"] == [flaky[0]] and sinks.starts["misset"] == [flaky[0]]
    assert "misset: no access token" in channel_side.errors
    assert channel_side.status()["channel errors"].endswith("(7 restarted)")


async def test_a_stopped_up_does_not_wait_out_a_back_off(monkeypatch: Any) -> None:
    sinks = FakeSinks(failures=100)
    monkeypatch.setattr(channels_module, "run_sink", sinks)
    channel_side = services()
    started = asyncio.get_running_loop().time()
    await run_for(channel_side, 20.0)  # stopped during the 16 s wait
    assert asyncio.get_running_loop().time() - started == pytest.approx(20.0)
    assert len(sinks.starts["flaky"]) == 5  # at 0, 1, 3, 7, 15 s
