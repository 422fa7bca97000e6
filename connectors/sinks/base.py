"""The sink contract: a channel adapter stages records with add() and sends them with flush();
ordering, coalescing, retries and offsets belong to the engine, so every adapter gets them alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.core.models import Availability
from streams.errors import InventoryError

Status = Literal["ack", "retry", "reject"]


class SinkError(InventoryError):
    """A channel could not take an availability update."""


class ChannelUnavailable(SinkError):
    """The whole call failed and may succeed later (429, 5xx, THROTTLED, connection error).

    `retry_after` is the channel's own hint in seconds (Retry-After, a cost model), if it gave one.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class InvalidSinkConfig(SinkError):
    """A channel's connector settings in the catalog are missing or wrong."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the channel said about one record of a flushed batch."""

    channel_sku: str
    status: Status
    reason: str = ""

    @classmethod
    def ack(cls, channel_sku: str) -> Outcome:
        return cls(channel_sku, "ack")

    @classmethod
    def retry(cls, channel_sku: str, reason: str) -> Outcome:
        """Send again at once with fresh state (e.g. a compare-and-set that needs a re-read)."""
        return cls(channel_sku, "retry", reason)

    @classmethod
    def reject(cls, channel_sku: str, reason: str) -> Outcome:
        """The channel will never accept this record as it is: it goes to the dead-letter topic."""
        return cls(channel_sku, "reject", reason)


MAX_HOLD_SECONDS = 3.0  # a sink's `max_hold` when it sets `settle` but not that


@runtime_checkable
class Sink(Protocol):
    """One channel's API. Calls are made one at a time by the engine, never concurrently.

    A sink subclasses this to inherit the pacing defaults below; it overrides the ones its channel
    needs (from its catalog settings).
    """

    channel_id: str
    max_batch: int  # records per flush() call the API accepts

    linger: float = 0.0
    """The coalescing window in seconds: while records keep arriving, a channel_sku sent less than
    `linger` ago waits until then (a hot SKU costs one send per window) and a batch that is not
    full goes at most once per window."""

    quiet: float | None = None
    """Seconds with no record after which nothing waits for a window any more, only for the rate
    limit; None: a quarter of `linger`."""

    settle: float = 0.0
    """Seconds (0: off): while records keep arriving, a value still changing waits until its
    channel_sku was quiet this long, but no longer than `max_hold` after the channel went out of
    date. A sell-out (`available` to 0 where the channel shows stock) skips the hold and the window
    and goes first; a value back from 0 skips the hold. Meant for channels paid per SKU (one call
    per record)."""

    max_hold: float = MAX_HOLD_SECONDS
    """The longest a value waits to settle, in seconds (never less than `linger`)."""

    bulk_hold: float = 0.0
    """For a BulkSink, in seconds: while records keep arriving, a bulk job waits until the oldest
    waiting update is this old, so it carries values that settled."""

    def add(self, record: Availability) -> None:
        """Stage a record for the next flush()."""

    async def ready(self) -> None:
        """Return when the channel's rate limit or cost budget allows the next call."""

    async def flush(self) -> list[Outcome]:
        """Send the staged records; one Outcome per record. Raises ChannelUnavailable."""

    async def close(self) -> None: ...


@runtime_checkable
class BulkSink(Sink, Protocol):
    """A sink with a second, slower path for large backlogs (e.g. a feed upload); its pacing
    adds `bulk_hold` (see Sink)."""

    bulk_threshold: int  # use the bulk path when at least this many records are waiting
    max_bulk: int

    async def bulk_ready(self) -> bool:
        """True when a bulk submission is allowed now (bulk limits are per minutes, not seconds)."""

    async def flush_bulk(self, records: Sequence[Availability]) -> list[Outcome]:
        """Submit the records in one bulk job and wait for its result. Raises ChannelUnavailable."""


class SettlingConfig(BaseModel):
    """Catalog settings of settling (see Sink: `settle`, `max_hold`), for channels paid per SKU."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    settle_seconds: float = Field(default=0.0, ge=0)  # quiet time before a changing value goes
    # the longest wait for a value to settle
    max_hold_seconds: float = Field(default=MAX_HOLD_SECONDS, gt=0)

    @model_validator(mode="after")
    def _hold_covers_settle(self) -> Self:
        if self.settle_seconds > self.max_hold_seconds:
            raise ValueError("settle_seconds cannot exceed max_hold_seconds")
        return self
