"""The clock of hold expiry, late requests and backorder horizons, one per worker."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from streams.core.catalog import Catalog
from streams.runtime.tables import state_time


@dataclass
class Clock:
    """The clock of hold expiry, late requests and backorder horizons: wall time in production,
    the largest occurred_at seen in replays and tests."""

    mode: str  # "wall" | "stream"
    stream_time: datetime = field(default_factory=lambda: datetime(1970, 1, 1, tzinfo=UTC))
    last_activity: float = 0.0  # monotonic time of the last batch any stage processed

    def observe(self, at: datetime) -> None:
        if at > self.stream_time:
            self.stream_time = at

    def busy(self) -> None:
        self.last_activity = time.monotonic()

    def decision_time(self) -> datetime:
        """The clock a reservation request is decided at (one expiring by then is not held)."""
        return datetime.now(UTC) if self.mode == "wall" else self.stream_time

    def today(self) -> date:
        """The date backorder horizons count from: wall time live, stream time in replays."""
        return datetime.now(UTC).date() if self.mode == "wall" else self.stream_time.date()

    def now(self) -> datetime | None:
        """The time holds expire against, or None when expiry must wait.

        With the stream clock, the largest occurred_at routed so far runs ahead of events still on
        their way through the other stages (orders, holds): expiring then could release a hold
        that an order already in flight confirms. So expiry waits until the worker is idle.
        """
        if self.mode == "wall":
            return datetime.now(UTC)
        return self.stream_time if time.monotonic() - self.last_activity > 0.3 else None


def catch_up(clock: Clock, states: Iterable[Any]) -> None:
    """The stream clock, once the tables are back after a rebalance and before any record is
    handled: at least the latest business time of the SKU states recovered. A worker that joined
    (or restarted) can handle a batch of commands before it has routed a single event, and would
    otherwise derive backorder horizons from 1970: a listing published with backorderable 0, kept
    until its SKU changed again (seen when a second worker joined mid-stream). Wall time needs
    nothing."""
    if clock.mode == "stream":
        for value in list(states):
            clock.observe(state_time(value))


class Worker(Protocol):
    """What the stages share (Runtime in streams.topology): the catalog they decide under, which
    is replaced when a newer one is adopted, and the clock."""

    catalog: Catalog
    clock: Clock
