"""A fake channel for engine tests: records every call, and fails the way a script tells it to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from connectors.emulators import Emulator, pointed_at
from connectors.sinks import SinkEngine, SinkMetrics, make_sink
from connectors.sinks.base import ChannelUnavailable, Outcome, Sink
from connectors.sinks.limits import Backoff
from streams.core.catalog import Channel
from streams.core.models import Availability

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def now() -> float:
    """The running loop's clock: time.monotonic() on a real loop, the fake time under looptime."""
    return asyncio.get_running_loop().time()


def availability(sku: str, version: int, available: int | None = None) -> Availability:
    return Availability(
        channel="pos",
        channel_sku=sku,
        available=version if available is None else available,
        backorderable=0,
        restock_date=None,
        version=version,
        as_of=T0,
        cause_event_id=f"e-{sku}-{version}",
    )


class FakeSink(Sink):
    """Holds the channel's view: sku -> (available, version) and every call's batch."""

    channel_id = "pos"

    def __init__(
        self,
        max_batch: int = 10,
        linger: float = 0.0,
        *,
        settle: float = 0.0,
        max_hold: float = 3.0,
        quiet: float | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.linger = linger
        self.settle = settle
        self.max_hold = max_hold
        self.quiet = quiet  # None: the engine's default, a quarter of `linger`
        self.call_times: list[float] = []
        self.staged: list[Availability] = []
        self.calls: list[list[Availability]] = []
        self.state: dict[str, Availability] = {}
        self.history: dict[str, list[int]] = {}
        self.failures: list[ChannelUnavailable] = []  # raised by the next calls, in order
        self.verdict: Callable[[Availability], Outcome | None] = lambda record: None

    def add(self, record: Availability) -> None:
        self.staged.append(record)

    async def ready(self) -> None:
        return None

    async def flush(self) -> list[Outcome]:
        batch, self.staged = self.staged, []
        self.calls.append(batch)
        self.call_times.append(now())
        if self.failures:
            raise self.failures.pop(0)
        outcomes = []
        for record in batch:
            outcome = self.verdict(record) or Outcome.ack(record.channel_sku)
            if outcome.status == "ack":
                self.state[record.channel_sku] = record
                self.history.setdefault(record.channel_sku, []).append(record.version)
            outcomes.append(outcome)
        return outcomes

    async def close(self) -> None:
        return None


def channel_record(
    sku: str, version: int, available: int, *, backorderable: int = 0, restock: date | None = None
) -> Availability:
    return Availability(
        channel="shop",
        channel_sku=sku,
        available=available,
        backorderable=backorderable,
        restock_date=restock,
        version=version,
        as_of=T0,
        cause_event_id=f"e-{sku}-{version}",
    )


async def deliver(
    emulator: Emulator, channel_type: str, records: list[Availability], **settings: Any
) -> tuple[SinkEngine, list[tuple[str, str]]]:
    """Run records through the real sink into a started emulator; (engine, dead letters)."""
    channel = pointed_at(Channel(id="shop", type=channel_type, locations=["wh"]), emulator)
    if settings:
        channel = Channel.model_validate({**channel.model_dump(), **settings})
    sink = make_sink(channel, SinkMetrics(CollectorRegistry()))
    letters: list[tuple[str, str]] = []

    async def dead_letter(record: Availability, *args: Any) -> None:
        letters.append((record.channel_sku, args[-1]))

    engine = SinkEngine(sink, dead_letter=dead_letter, backoff=Backoff(base=0.05, cap=0.5))
    for record in records:
        engine.offer(record)
    try:
        await asyncio.wait_for(engine.run_until_idle(), 30)
    finally:
        await sink.close()
    return engine, letters
