"""`up`'s channel side: a sink that fails is shown and started again; the others go on."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from connectors import host as channels_module
from connectors.host import SINK_RESTART_MAX_DELAY, ChannelServices
from connectors.sinks.base import InvalidSinkConfig
from streams.core.catalog import Catalog, Channel, load_catalog
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


# ---- following inventory.catalog ---------------------------------------------------------------


def catalog_of(version: int, channels: dict[str, dict[str, Any]]) -> Catalog:
    return load_catalog(
        {
            "version": version,
            "locations": [{"id": "wh"}],
            "channels": [
                {"id": ch, "type": "pos", "locations": ["wh"], "url": "http://127.0.0.1:9/a"}
                | extra
                for ch, extra in channels.items()
            ],
            "listings": [],
        }
    )


class RecordingSinks:
    """Stands in for run_sink: when each channel's sink started and stopped, with what settings."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, float, float | None, dict[str, Any]]] = []

    async def __call__(
        self, channel: Channel, _settings: Settings, _bootstrap: str, stop: asyncio.Event, **_: Any
    ) -> None:
        loop = asyncio.get_running_loop()
        run = len(self.runs)
        self.runs.append((channel.id, loop.time(), None, dict(channel.model_extra or {})))
        await stop.wait()
        self.runs[run] = (*self.runs[run][:2], loop.time(), self.runs[run][3])

    def of(self, channel_id: str) -> list[tuple[float, float | None, dict[str, Any]]]:
        return [(start, end, extra) for ch, start, end, extra in self.runs if ch == channel_id]


class Published:
    """inventory.catalog as the sinks' follower sees it: newer catalogs at set times, a failure."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, schedule: list[tuple[float, Catalog | Exception]]
    ) -> None:
        self.loop, self.schedule = loop, schedule  # called from a thread: the loop's clock
        self.checks = 0
        self.closed = False

    def __call__(self) -> Catalog | None:
        self.checks += 1
        now = self.loop.time()
        while self.schedule and self.schedule[0][0] <= now:
            _, item = self.schedule.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        return None

    def close(self) -> None:
        self.closed = True


async def test_sinks_follow_the_catalog_added_changed_and_removed_channels(
    monkeypatch: Any,
) -> None:
    sinks = RecordingSinks()
    monkeypatch.setattr(channels_module, "run_sink", sinks)
    first = catalog_of(1, {"steady": {}, "tuned": {"rate": 5}, "retired": {}})
    later = catalog_of(2, {"steady": {}, "tuned": {"rate": 8}, "added": {}})
    published = Published(
        asyncio.get_running_loop(),
        [
            (3.0, KafkaException(KafkaError(KafkaError._TRANSPORT))),  # the broker away a moment
            (5.0, later),
            (9.0, catalog_of(1, {})),  # an older version: not applied
        ],
    )
    settings = Settings(catalog_check_seconds=2)
    channel_side = ChannelServices(
        settings, "127.0.0.1:9", first, demo=False, api="off", follow=published
    )
    channel_side._stop = asyncio.Event()
    running = asyncio.create_task(channel_side._sinks(list(first.channels)))
    await asyncio.sleep(13.0)
    channel_side._stop.set()
    await running
    assert published.checks == 6  # every 2 s
    # unchanged: one run from the start to the end
    assert [(s, e) for s, e, _ in sinks.of("steady")] == [(0.0, 13.0)]
    # changed: stopped at the check that saw version 2, then started again with the new settings
    assert [(s, e, x["rate"]) for s, e, x in sinks.of("tuned")] == [(0, 6, 5), (6, 13, 8)]
    assert [(s, e) for s, e, _ in sinks.of("retired")] == [(0.0, 6.0)]
    assert [(s, e) for s, e, _ in sinks.of("added")] == [(6.0, 13.0)]
    assert channel_side.catalog.version == 2
    assert published.closed  # its consumer goes before the broker does
